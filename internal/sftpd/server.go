package sftpd

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Log attribute keys.
const (
	logRemote = "remote"
	logUser   = "user"
	logMethod = "method"
	logPath   = "path"
	logFault  = "fault"
	logError  = "error"
)

const (
	defaultListen      = "127.0.0.1:0"
	defaultMaxSessions = 10               // OpenSSH's default
	handshakeTimeout   = 30 * time.Second // key exchange and authentication
	drainTimeout       = 10 * time.Second // see conn.drop
)

// Config configures a Server. Only Users is required.
type Config struct {
	// Listen is the TCP address to listen on. Default "127.0.0.1:0" (a free
	// loopback port; see Server.Port).
	Listen string

	// HostKey is the server's host key. When nil, HostKeyFile is used.
	HostKey ssh.Signer
	// HostKeyFile is a private key in OpenSSH format. If it does not exist,
	// an ed25519 key is generated and saved there (mode 0600), so that a
	// server restarted with the same file keeps its fingerprint. When both
	// HostKey and HostKeyFile are empty, a new ed25519 key is generated for
	// this Server only.
	HostKeyFile string

	// Home is the directory that "." and relative paths refer to, like a
	// user's home directory on a real server. It must be absolute; default
	// "/".
	//
	// The server does not jail its users: remote paths are paths of the
	// real file system, used with the permissions of the process running
	// the Server. Give accounts only to clients you would give a shell.
	Home string

	// Users maps user names to accounts. A login as any other name fails.
	Users map[string]Account

	// Faults are the faults in effect at start; see Server.SetFaults.
	Faults Faults

	// Quirks are the quirks in effect at start; see Server.SetQuirks.
	Quirks Quirks

	// MaxSessions is the number of session channels one connection may have
	// open at a time; more are refused ("Session open refused by peer"
	// through a ControlMaster). Default 10, as in OpenSSH.
	MaxSessions int

	// Logger receives connection, authentication, session and fault
	// events. Secrets are never logged. Nil discards.
	Logger *slog.Logger
}

// Account is one user. An account accepts only the methods it has
// credentials for. The server offers clients the union of the methods of all
// its accounts, so with a single account the client's "Permission denied
// (...)" line lists exactly that account's methods.
type Account struct {
	// Password enables "password" authentication when not empty.
	Password string
	// AuthorizedKeys enables "publickey" authentication with these keys.
	AuthorizedKeys []ssh.PublicKey
	// KeyboardInteractive enables "keyboard-interactive" authentication.
	KeyboardInteractive *KeyboardInteractive
}

// KeyboardInteractive is one round of keyboard-interactive prompts. All
// answers must match for the login to succeed.
type KeyboardInteractive struct {
	// Name and Instruction are sent with the prompts; OpenSSH prints each
	// non-empty one on its own line on stderr before prompting.
	Name        string
	Instruction string
	Questions   []Question
}

// Question is one keyboard-interactive prompt.
type Question struct {
	Prompt string // shown as is, e.g. "Verification code: "
	Echo   bool   // whether the client echoes the answer
	Answer string // the expected answer
}

// Stats are counters since New. Methods are "password", "publickey" and
// "keyboard-interactive"; the "none" probe is not counted. A publickey
// query that the server accepts is not an attempt; the signed request that
// follows is.
type Stats struct {
	Connections  int            // TCP connections accepted
	Open         int            // connections being served now
	Logins       int            // successful authentications
	AuthAttempts map[string]int // authentication requests by method
	AuthFailures map[string]int // failed authentication requests by method
	Sessions     int            // SFTP sessions started
	Keepalives   int            // keepalive@openssh.com requests answered (ServerAliveInterval)

	// SFTP requests received, including those refused (by a fault, a
	// quirk, or the file system); see also Server.Ops.
	Renames      int // SSH_FXP_RENAME
	PosixRenames int // posix-rename@openssh.com
	FSyncs       int // fsync@openssh.com
	Setstats     int // SSH_FXP_SETSTAT and SSH_FXP_FSETSTAT
	StatVFS      int // statvfs@openssh.com
	PickedUp     int // files taken by Quirks.PickUpRenamed

	// BytesWritten is the file data stored by SSH_FXP_WRITE requests (what
	// a client sent, not what ended up in files).
	BytesWritten int64

	// MaxWritesInFlight is the most SSH_FXP_WRITE requests the server was
	// serving at one moment, over all sessions: with Faults.WriteDelay it
	// shows whether a client keeps several writes (of one file or of many)
	// in flight or waits for each answer.
	MaxWritesInFlight int
}

// Server is a running SSH server with the SFTP subsystem.
type Server struct {
	cfg      Config
	log      *slog.Logger
	hostKey  ssh.Signer
	listener net.Listener
	sshCfg   *ssh.ServerConfig

	faultsMu      sync.Mutex // guards faults, faultsChanged and quirks
	faults        Faults
	faultsChanged chan struct{} // closed and replaced by every SetFaults
	quirks        Quirks

	mu     sync.Mutex
	closed bool
	conns  map[*conn]struct{}
	stats  Stats
	ops    []Op // see Ops

	writesInFlight int // SSH_FXP_WRITE requests being served; see Stats.MaxWritesInFlight

	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New validates cfg, loads or generates the host key, and starts listening
// and serving at once.
func New(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = defaultListen
	}
	if cfg.Home == "" {
		cfg.Home = "/"
	}
	if !filepath.IsAbs(cfg.Home) {
		return nil, fmt.Errorf("sftpd: home %q must be an absolute path", cfg.Home)
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = defaultMaxSessions
	}
	if len(cfg.Users) == 0 {
		return nil, errors.New("sftpd: no users configured: nobody could log in")
	}
	users := make(map[string]Account, len(cfg.Users))
	for name, a := range cfg.Users {
		users[name] = a
	}
	cfg.Users = users // the caller may change its map later
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	hostKey := cfg.HostKey
	if hostKey == nil {
		var err error
		if hostKey, err = loadOrCreateHostKey(cfg.HostKeyFile); err != nil {
			return nil, err
		}
	}

	s := &Server{
		cfg:           cfg,
		log:           log,
		hostKey:       hostKey,
		faults:        cfg.Faults,
		quirks:        cfg.Quirks,
		faultsChanged: make(chan struct{}),
		conns:         map[*conn]struct{}{},
		stats:         Stats{AuthAttempts: map[string]int{}, AuthFailures: map[string]int{}},
	}
	s.sshCfg = s.serverConfig()

	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("sftpd: listen on %s: %w", cfg.Listen, err)
	}
	s.listener = l
	log.Info("sftpd listening", "addr", l.Addr().String(), "fingerprint", s.HostKeyFingerprint())
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr is the address the server listens on, e.g. "127.0.0.1:40123".
func (s *Server) Addr() string { return s.listener.Addr().String() }

// Port is the TCP port the server listens on.
func (s *Server) Port() int { return s.listener.Addr().(*net.TCPAddr).Port }

// HostKey is the server's public host key.
func (s *Server) HostKey() ssh.PublicKey { return s.hostKey.PublicKey() }

// HostKeyFingerprint is the host key's fingerprint as OpenSSH prints it:
// "SHA256:" and 43 base64 characters.
func (s *Server) HostKeyFingerprint() string { return ssh.FingerprintSHA256(s.hostKey.PublicKey()) }

// KnownHostsLine is a known_hosts line for the server:
// "[127.0.0.1]:PORT ssh-ed25519 AAAA...".
func (s *Server) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, s.hostKey.PublicKey())
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Open = len(s.conns)
	st.AuthAttempts = make(map[string]int, len(s.stats.AuthAttempts))
	st.AuthFailures = make(map[string]int, len(s.stats.AuthFailures))
	for k, v := range s.stats.AuthAttempts {
		st.AuthAttempts[k] = v
	}
	for k, v := range s.stats.AuthFailures {
		st.AuthFailures[k] = v
	}
	return st
}

// writeBegan and writeEnded bracket the serving of one write request.
func (s *Server) writeBegan() {
	s.mu.Lock()
	s.writesInFlight++
	s.stats.MaxWritesInFlight = max(s.stats.MaxWritesInFlight, s.writesInFlight)
	s.mu.Unlock()
}

func (s *Server) writeEnded() {
	s.mu.Lock()
	s.writesInFlight--
	s.mu.Unlock()
}

// Close stops listening, closes every connection and waits for all of the
// server's goroutines. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		s.closeErr = s.listener.Close()
		for _, c := range conns {
			c.close()
		}
		s.wg.Wait()
		s.log.Info("sftpd closed", "addr", s.Addr())
	})
	return s.closeErr
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("sftpd accept failed; no longer accepting connections", logError, err)
			}
			return
		}
		c := &conn{srv: s, nc: nc, closed: make(chan struct{})}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.stats.Connections++
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// serverConfig builds the SSH configuration: host key and the union of the
// accounts' authentication methods.
func (s *Server) serverConfig() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-dropship_sftpd",
		AuthLogCallback: func(md ssh.ConnMetadata, method string, err error) {
			if method == "none" {
				return
			}
			s.mu.Lock()
			s.stats.AuthAttempts[method]++
			if err != nil {
				s.stats.AuthFailures[method]++
			}
			s.mu.Unlock()
			s.log.Info("sftpd auth", logRemote, md.RemoteAddr().String(), logUser, md.User(), logMethod, method, "ok", err == nil)
		},
	}
	cfg.AddHostKey(s.hostKey)
	var password, publickey, kbdint bool
	for _, a := range s.cfg.Users {
		password = password || a.Password != ""
		publickey = publickey || len(a.AuthorizedKeys) > 0
		kbdint = kbdint || a.KeyboardInteractive != nil
	}
	if password {
		cfg.PasswordCallback = s.checkPassword
	}
	if publickey {
		cfg.PublicKeyCallback = s.checkPublicKey
	}
	if kbdint {
		cfg.KeyboardInteractiveCallback = s.checkKeyboardInteractive
	}
	return cfg
}

var errAuth = errors.New("authentication failed")

func (s *Server) checkPassword(md ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
	a, ok := s.cfg.Users[md.User()]
	if !ok || a.Password == "" || subtle.ConstantTimeCompare(password, []byte(a.Password)) != 1 {
		return nil, errAuth
	}
	return nil, nil
}

func (s *Server) checkPublicKey(md ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	a, ok := s.cfg.Users[md.User()]
	if !ok {
		return nil, errAuth
	}
	for _, k := range a.AuthorizedKeys {
		if subtle.ConstantTimeCompare(k.Marshal(), key.Marshal()) == 1 {
			return nil, nil
		}
	}
	return nil, errAuth
}

func (s *Server) checkKeyboardInteractive(md ssh.ConnMetadata, challenge ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	a, ok := s.cfg.Users[md.User()]
	if !ok || a.KeyboardInteractive == nil {
		return nil, errAuth
	}
	ki := a.KeyboardInteractive
	prompts := make([]string, len(ki.Questions))
	echos := make([]bool, len(ki.Questions))
	for i, q := range ki.Questions {
		prompts[i], echos[i] = q.Prompt, q.Echo
	}
	answers, err := challenge(ki.Name, ki.Instruction, prompts, echos)
	if err != nil {
		return nil, err
	}
	if len(answers) != len(ki.Questions) {
		return nil, errAuth
	}
	good := 1
	for i, q := range ki.Questions {
		good &= subtle.ConstantTimeCompare([]byte(answers[i]), []byte(q.Answer))
	}
	if good != 1 {
		return nil, errAuth
	}
	return nil, nil
}

// loadOrCreateHostKey reads an OpenSSH private key from path, or generates an
// ed25519 key and saves it there. An empty path gives a key kept in memory.
func loadOrCreateHostKey(path string) (ssh.Signer, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err == nil {
			signer, err := ssh.ParsePrivateKey(b)
			if err != nil {
				return nil, fmt.Errorf("sftpd: host key %s: %w (remove it to have a new one generated)", path, err)
			}
			return signer, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sftpd: read host key: %w", err)
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sftpd: generate host key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("sftpd: generate host key: %w", err)
	}
	if path == "" {
		return signer, nil
	}
	block, err := ssh.MarshalPrivateKey(priv, "dropship sftpd host key")
	if err != nil {
		return nil, fmt.Errorf("sftpd: encode host key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sftpd: save host key: %w", err)
	}
	if _, err := f.Write(pem.EncodeToMemory(block)); err != nil {
		f.Close()
		return nil, fmt.Errorf("sftpd: save host key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sftpd: save host key: %w", err)
	}
	return signer, nil
}

// conn is one client connection.
type conn struct {
	srv *Server
	nc  net.Conn // the TCP connection

	closeOnce sync.Once
	closed    chan struct{} // closed by close

	stateMu  sync.Mutex
	hung     bool          // HangAfter fired: reads and writes wait, see gate
	dropping bool          // DisconnectAfter fired: see drop
	drained  chan struct{} // closed when drop is done; set with dropping

	sessions sync.WaitGroup // session goroutines, see serve
	mu       sync.Mutex
	open     int // session channels open
}

// close closes the network connection, which ends the SSH connection and,
// through it, every channel and SFTP session on it.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.nc.Close()
	})
}

func (c *conn) serve() {
	defer c.close()
	log := c.srv.log.With(logRemote, c.nc.RemoteAddr().String())
	_ = c.nc.SetDeadline(time.Now().Add(handshakeTimeout))
	sconn, chans, reqs, err := ssh.NewServerConn(gate{Conn: c.nc, c: c}, c.srv.sshCfg)
	if err != nil {
		log.Info("sftpd handshake failed", logError, err)
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.srv.mu.Lock()
	c.srv.stats.Logins++
	c.srv.mu.Unlock()
	log = log.With(logUser, sconn.User())
	log.Info("sftpd login")

	// Global requests (keepalive@openssh.com, no-more-sessions@openssh.com)
	// get a failure reply, as from OpenSSH; a reply is all keepalives need.
	c.sessions.Add(1)
	go func() {
		defer c.sessions.Done()
		for req := range reqs {
			if req.Type == "keepalive@openssh.com" {
				c.srv.mu.Lock()
				c.srv.stats.Keepalives++
				c.srv.mu.Unlock()
			}
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}()
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only session channels are supported")
			continue
		}
		c.mu.Lock()
		full := c.open >= c.srv.cfg.MaxSessions
		if !full {
			c.open++
		}
		c.mu.Unlock()
		if full {
			log.Info("sftpd session refused: MaxSessions reached")
			_ = nch.Reject(ssh.Prohibited, "too many sessions on this connection")
			continue
		}
		c.sessions.Add(1)
		go func() {
			defer c.sessions.Done()
			c.session(nch, log)
			c.mu.Lock()
			c.open--
			c.mu.Unlock()
		}()
	}
	// chans is closed: the connection is gone.
	c.waitDropped()
	c.close()
	c.sessions.Wait()
	log.Info("sftpd connection closed")
}

// session serves one session channel: the "sftp" subsystem and nothing
// else. Other requests (exec, shell, pty-req, env, ...) get a failure reply,
// so clients print a clean error such as "subsystem request failed".
func (c *conn) session(nch ssh.NewChannel, log *slog.Logger) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	var sftpDone chan struct{}
	for req := range reqs {
		if req.Type == "subsystem" && sftpDone == nil && subsystemName(req.Payload) == "sftp" {
			_ = req.Reply(true, nil)
			sftpDone = make(chan struct{})
			go func() {
				defer close(sftpDone)
				c.serveSFTP(ch, log)
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
				_ = ch.Close()
			}()
			continue
		}
		log.Debug("sftpd channel request refused", "request", req.Type)
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
	}
	if sftpDone != nil {
		<-sftpDone
	}
}

func subsystemName(payload []byte) string {
	var p struct{ Name string }
	if err := ssh.Unmarshal(payload, &p); err != nil {
		return ""
	}
	return p.Name
}

func (c *conn) serveSFTP(ch ssh.Channel, log *slog.Logger) {
	c.srv.mu.Lock()
	c.srv.stats.Sessions++
	c.srv.mu.Unlock()
	log.Info("sftpd sftp session started")
	// The session keeps the extensions it is offered now; see Quirks.
	exts := c.srv.Quirks().extensions()
	h := &handlers{conn: c, home: c.srv.cfg.Home, log: log, exts: exts, files: map[*file]struct{}{}}
	rs := sftp.NewRequestServer(newSFTPChannel(ch, exts), sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h},
		sftp.WithStartDirectory(c.srv.cfg.Home))
	err := rs.Serve()
	if err != nil && !errors.Is(err, io.EOF) {
		log.Info("sftpd sftp session ended", logError, err)
		return
	}
	log.Info("sftpd sftp session ended")
}
