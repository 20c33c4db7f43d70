package sftpd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

// SFTP packet types and flags used by sftpChannel (draft-ietf-secsh-filexfer-02).
const (
	fxpVersion     = 2
	fxpFsetstat    = 10
	fxpExtended    = 200
	attrExtended   = 0x80000000
	maxPacket      = 256 * 1024 // pkg/sftp's limit for a packet's length
	maxExtendedLen = 64 * 1024  // longer extended requests are passed on as they are
)

// fsyncAttrs are the attributes of the FSETSTAT that stands in for an
// fsync@openssh.com request (see sftpChannel): one extended attribute that
// no client sends. Filecmd recognizes it by the flags (attrExtended alone)
// and these bytes.
var fsyncAttrs = func() []byte {
	b := binary.BigEndian.AppendUint32(nil, 1) // extended_count
	b = appendString(b, "fsync@dropship.internal")
	return appendString(b, "")
}()

// sftpChannel sits between the SSH channel and pkg/sftp's RequestServer,
// which has no per-server extension list and does not know
// fsync@openssh.com. It
//
//   - replaces the extension list of the server's first packet,
//     SSH_FXP_VERSION, with exts, and
//   - turns each fsync@openssh.com request into an SSH_FXP_FSETSTAT with
//     fsyncAttrs on the same handle, which pkg/sftp hands to Filecmd with
//     the open file's path, in order with the session's other requests.
//     Both answer with a status packet, so the reply needs no change.
//
// Everything else passes through unchanged.
type sftpChannel struct {
	rw   io.ReadWriteCloser
	exts []extension

	// Read side; pkg/sftp reads from one goroutine.
	pending []byte // bytes of a (rewritten) packet not yet returned
	through int    // bytes of the current packet still to pass through

	// Write side; pkg/sftp serializes its writes, the mutex is for safety.
	wmu      sync.Mutex
	wbuf     []byte // the first packet, until it is complete
	versDone bool   // the first packet is out
}

func newSFTPChannel(rw io.ReadWriteCloser, exts []extension) *sftpChannel {
	return &sftpChannel{rw: rw, exts: exts}
}

var errBadPacket = errors.New("sftpd: bad SFTP packet length")

// Read returns the client's packets, with fsync@openssh.com requests
// rewritten.
func (c *sftpChannel) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.through > 0 {
		if len(p) > c.through {
			p = p[:c.through]
		}
		n, err := c.rw.Read(p)
		c.through -= n
		if err == io.EOF && c.through > 0 {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	var hdr [5]byte // uint32 length, byte type
	if n, err := io.ReadFull(c.rw, hdr[:]); err != nil {
		if n == 0 {
			return 0, err // io.EOF between packets: the client is done
		}
		return 0, io.ErrUnexpectedEOF
	}
	length := binary.BigEndian.Uint32(hdr[:4])
	if length == 0 || length > maxPacket {
		return 0, errBadPacket
	}
	if hdr[4] != fxpExtended || length > maxExtendedLen {
		c.pending = append(c.pending[:0], hdr[:]...)
		c.through = int(length) - 1
		return c.Read(p)
	}
	pkt := make([]byte, 4+length)
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(c.rw, pkt[5:]); err != nil {
		return 0, io.ErrUnexpectedEOF
	}
	c.pending = rewriteExtended(pkt)
	return c.Read(p)
}

// rewriteExtended turns an fsync@openssh.com request (uint32 length, byte
// SSH_FXP_EXTENDED, uint32 id, string "fsync@openssh.com", string handle)
// into SSH_FXP_FSETSTAT (uint32 length, byte type, uint32 id, string
// handle, uint32 flags, attrs). Other packets are returned as they are.
func rewriteExtended(pkt []byte) []byte {
	body := pkt[5:]
	if len(body) < 8 {
		return pkt
	}
	id, rest := body[:4], body[4:]
	name, rest, ok := cutString(rest)
	if !ok || name != extFSync {
		return pkt
	}
	handle, tail, ok := cutString(rest)
	if !ok || len(tail) != 0 {
		return pkt
	}
	out := make([]byte, 4, 4+1+4+4+len(handle)+4+len(fsyncAttrs))
	out = append(out, fxpFsetstat)
	out = append(out, id...)
	out = appendString(out, handle)
	out = binary.BigEndian.AppendUint32(out, attrExtended)
	out = append(out, fsyncAttrs...)
	binary.BigEndian.PutUint32(out[:4], uint32(len(out)-4))
	return out
}

// isFSync reports whether a Setstat request's flags and attributes are
// those rewriteExtended gives an fsync@openssh.com request.
func isFSync(flags uint32, attrs []byte) bool {
	return flags == attrExtended && bytes.Equal(attrs, fsyncAttrs)
}

// Write passes the server's packets on, with the extension list of
// SSH_FXP_VERSION replaced.
func (c *sftpChannel) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.versDone {
		return c.rw.Write(p)
	}
	c.wbuf = append(c.wbuf, p...)
	if len(c.wbuf) < 4 {
		return len(p), nil
	}
	end := 4 + int(binary.BigEndian.Uint32(c.wbuf[:4]))
	if len(c.wbuf) < end {
		return len(p), nil
	}
	first, rest := c.wbuf[:end], c.wbuf[end:]
	if end >= 9 && first[4] == fxpVersion {
		out := make([]byte, 4, 64)
		out = append(out, first[4:9]...) // type, uint32 version
		for _, e := range c.exts {
			out = appendString(out, e.name)
			out = appendString(out, e.data)
		}
		binary.BigEndian.PutUint32(out[:4], uint32(len(out)-4))
		first = out
	}
	c.versDone = true
	c.wbuf = nil
	if _, err := c.rw.Write(append(first, rest...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the channel.
func (c *sftpChannel) Close() error { return c.rw.Close() }

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// cutString splits an SSH string (uint32 length, bytes) off the front of b.
func cutString(b []byte) (s string, rest []byte, ok bool) {
	if len(b) < 4 {
		return "", b, false
	}
	n := binary.BigEndian.Uint32(b[:4])
	if uint64(len(b)-4) < uint64(n) {
		return "", b, false
	}
	return string(b[4 : 4+n]), b[4+n:], true
}
