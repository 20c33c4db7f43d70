package sftpd

import (
	"io"
	"net"
	"time"
)

// Faults are test levers that make the server misbehave the way real servers
// and networks do. They act on the real SFTP requests of real clients. The
// zero value means no faults. DisconnectAfter and HangAfter count the bytes
// of file data received in write requests on one open file.
//
// What the OpenSSH 9.2 clients print (stderr; scp in its default SFTP mode;
// see the package tests):
//
//	DenyWrite        scp: dest open "PATH": Permission denied        scp and sftp -b exit 1
//	DiskFullAfter    scp: write remote "PATH": Failure               scp and sftp -b exit 1
//	DisconnectAfter  Connection to 127.0.0.1 closed by remote host.  exit 255, then a line that varies:
//	                 "scp: Connection closed" or "…Couldn't send packet: Connection reset by peer" or "…: Broken pipe"
//	HangAfter        Timeout, server 127.0.0.1 not responding.       exit 255 (needs ServerAliveInterval;
//	                 without it the client waits for ever), then "scp: Connection closed"
//	RejectRename     remote rename "OLD" to "NEW": Permission denied sftp -b exit 1
//
// sftp prints the same messages as scp without the "scp: " prefix.
type Faults struct {
	// DenyWrite makes every open for writing fail with "Permission denied".
	DenyWrite bool

	// DiskFullAfter > 0 lets a file hold only its first DiskFullAfter
	// bytes, as on a full disk: a write reaching beyond stores the part
	// below the limit and fails with SSH_FX_FAILURE. (It counts offsets,
	// not bytes received, so that the outcome does not depend on the order
	// in which concurrent writes are served.)
	DiskFullAfter int64

	// DisconnectAfter > 0 closes the TCP connection, without an SSH
	// disconnect message, once a file has received this many bytes, as a
	// crashed server would. The write that reaches the limit is not stored.
	DisconnectAfter int64

	// DisconnectAfterRead > 0 does the same once a file opened for reading
	// has served this many bytes (a download interrupted by a crash).
	DisconnectAfterRead int64

	// HangAfter > 0 freezes the connection once a file has received this
	// many bytes: the server stops reading from and writing to it, so the
	// client's keepalives go unanswered while TCP stays open. The connection
	// stays frozen until the server is closed or HangAfter is set to 0 with
	// SetFaults, after which it carries on.
	HangAfter int64

	// RejectRename makes rename and posix-rename@openssh.com fail with
	// "Permission denied".
	RejectRename bool

	// WriteDelay > 0 delays every write request by this long, to slow a
	// transfer down (progress, stall and timeout tests).
	WriteDelay time.Duration
}

// SetFaults replaces the faults in effect. It is safe to call while clients
// are connected; requests already running see the change at their next
// check.
func (s *Server) SetFaults(f Faults) {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	s.faults = f
	close(s.faultsChanged)
	s.faultsChanged = make(chan struct{})
}

// Faults returns the faults in effect.
func (s *Server) Faults() Faults {
	f, _ := s.faultsNow()
	return f
}

// faultsNow returns the faults and a channel that is closed at the next
// change.
func (s *Server) faultsNow() (Faults, <-chan struct{}) {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	return s.faults, s.faultsChanged
}

// hang freezes the connection (see Faults.HangAfter) and waits until it is
// released.
func (c *conn) hang() {
	c.stateMu.Lock()
	c.hung = true
	c.stateMu.Unlock()
	c.waitWhileHung()
}

// waitWhileHung blocks while the connection is frozen: until HangAfter is
// cleared or the connection is closed.
func (c *conn) waitWhileHung() {
	for {
		c.stateMu.Lock()
		hung := c.hung
		c.stateMu.Unlock()
		if !hung {
			return
		}
		f, changed := c.srv.faultsNow()
		if f.HangAfter == 0 {
			c.stateMu.Lock()
			c.hung = false
			c.stateMu.Unlock()
			return
		}
		select {
		case <-changed:
		case <-c.closed:
			return
		}
	}
}

// sleep waits for d, or less if the connection is closed first.
func (c *conn) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.closed:
	}
}

// drop ends the connection the way a crashed server does (see
// Faults.DisconnectAfter): it sends FIN at once, hides the connection from
// the SSH layer, and discards what the client still sends until the client
// closes. Closing with unread data would make the kernel send RST instead,
// and the client's message would then depend on timing.
func (c *conn) drop() {
	c.stateMu.Lock()
	if c.dropping {
		c.stateMu.Unlock()
		return
	}
	c.dropping = true
	c.drained = make(chan struct{})
	c.stateMu.Unlock()

	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	c.sessions.Add(1)
	go func() {
		defer c.sessions.Done()
		defer close(c.drained)
		_ = c.nc.SetReadDeadline(time.Now().Add(drainTimeout))
		_, _ = io.Copy(io.Discard, c.nc)
		c.close()
	}()
}

// isDropping reports whether drop was called.
func (c *conn) isDropping() bool {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.dropping
}

// waitDropped waits until a drop in progress is done.
func (c *conn) waitDropped() {
	c.stateMu.Lock()
	drained := c.drained
	c.stateMu.Unlock()
	if drained != nil {
		<-drained
	}
}

// gate is the network connection as the SSH layer sees it: reads and writes
// wait while the connection is frozen by HangAfter, and the connection looks
// closed once it is being dropped.
type gate struct {
	net.Conn
	c *conn
}

func (g gate) Read(p []byte) (int, error) {
	g.c.waitWhileHung()
	if g.c.isDropping() {
		return 0, io.EOF
	}
	return g.Conn.Read(p)
}

func (g gate) Write(p []byte) (int, error) {
	g.c.waitWhileHung()
	if g.c.isDropping() {
		return 0, net.ErrClosed
	}
	return g.Conn.Write(p)
}

// Close closes the connection, unless drop is in charge of that.
func (g gate) Close() error {
	if !g.c.isDropping() {
		g.c.close()
	}
	return nil
}
