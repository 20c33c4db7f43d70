package sshdtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// RequireEnv is the environment variable that turns "sshd is not installed"
// from a skip into a test failure. CI sets it to 1.
const RequireEnv = "DROPSHIP_REQUIRE_SSHD"

// Timeouts. They are generous because CI machines are small and shared.
const (
	readyTimeout = 15 * time.Second // from exec to a banner on the port
	stopGrace    = 5 * time.Second  // from SIGTERM to SIGKILL
	bindAttempts = 5                // fresh ports tried when sshd cannot bind
)

// Options adjust the generated sshd_config.
type Options struct {
	// MaxSessions sets sshd's MaxSessions (sessions per connection, which
	// bounds how many clients one ControlMaster can serve). 0 keeps sshd's
	// default of 10.
	MaxSessions int
	// ExtraConfig lines are appended to sshd_config as they are.
	ExtraConfig []string
	// NoSFTP leaves out the "Subsystem sftp" line, so SFTP clients fail with
	// "subsystem request failed on channel 0".
	NoSFTP bool
	// RSAHostKey adds an RSA host key next to the ed25519 one. It is off by
	// default because generating it costs a few hundred milliseconds.
	RSAHostKey bool
}

// Server is a running sshd on 127.0.0.1. The exported fields describe it for
// clients; they change only in RotateHostKey. A Server is meant to be used
// from one test goroutine: Stop, Restart and RotateHostKey must not be called
// concurrently with each other.
type Server struct {
	Host string // always "127.0.0.1"
	Port int    // stays the same across Restart and RotateHostKey
	User string // the user running the test: the only account sshd can log in as a non-root user
	Dir  string // the server's private directory: sshd_config, keys, authorized_keys, pid file, log

	// ClientKey is an unencrypted ed25519 private key (mode 0600) listed in
	// authorized_keys.
	ClientKey string
	// EncryptedClientKey is an ed25519 private key protected with
	// EncryptedKeyPassphrase, also listed in authorized_keys.
	EncryptedClientKey     string
	EncryptedKeyPassphrase string

	// HostKeyFingerprint is the SHA256 fingerprint of the ed25519 host key,
	// as ssh prints it in its host-key prompt ("SHA256:...").
	HostKeyFingerprint string
	// RSAHostKeyFingerprint is set when Options.RSAHostKey is.
	RSAHostKeyFingerprint string
	// KnownHostsLine is the ed25519 host key as a known_hosts line:
	// "[127.0.0.1]:PORT ssh-ed25519 AAAA...".
	KnownHostsLine string

	sshd    string
	keygen  string
	opts    Options
	config  string
	logPath string

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of sshd.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when Wait returned
	err  error         // Wait's result, readable after done
}

// Require returns the path of sshd. When sshd is not installed it skips the
// test, or fails it when DROPSHIP_REQUIRE_SSHD=1.
func Require(t testing.TB) string {
	t.Helper()
	return requireTool(t, "sshd", "/usr/sbin/sshd", "/usr/local/sbin/sshd")
}

// requireTool finds an OpenSSH program in PATH or at one of the fallback
// paths (an ordinary user's PATH often lacks /usr/sbin).
func requireTool(t testing.TB, name string, fallbacks ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range fallbacks {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found in PATH (install openssh-server and openssh-client)", name)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s, and %s=1 forbids skipping", msg, RequireEnv)
	}
	t.Skip(msg)
	return ""
}

// Start generates keys and a configuration in a fresh temporary directory and
// starts sshd on a free port of 127.0.0.1. It returns once sshd answers with
// its SSH banner. The server is stopped by t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{
		Host:   "127.0.0.1",
		Dir:    t.TempDir(),
		sshd:   Require(t),
		keygen: requireTool(t, "ssh-keygen", "/usr/bin/ssh-keygen"),
		opts:   opts,
	}
	s.config = filepath.Join(s.Dir, "sshd_config")
	s.logPath = filepath.Join(s.Dir, "sshd.log")

	u, err := user.Current()
	if err != nil {
		t.Fatalf("sshdtest: look up the current user (sshd can only log in as a user with a passwd entry): %v", err)
	}
	s.User = u.Username

	if os.Geteuid() == 0 {
		// sshd running as root needs its privilege-separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshdtest: create sshd's privilege separation directory: %v", err)
		}
		// With UsePAM no, a root sshd refuses accounts whose shadow password
		// starts with "!", even for key logins.
		if lockedAccount(s.User) {
			t.Fatalf("sshdtest: account %s is locked (its password in /etc/shadow starts with '!'), so sshd would refuse it; "+
				"unlock it for key logins with: usermod -p '*' %s", s.User, s.User)
		}
	}

	s.generateHostKeys(t)
	s.ClientKey = filepath.Join(s.Dir, "client_ed25519")
	s.EncryptedClientKey = filepath.Join(s.Dir, "client_ed25519_enc")
	s.EncryptedKeyPassphrase = "sshdtest passphrase"
	s.keygenRun(t, "-t", "ed25519", "-N", "", "-C", "sshdtest client", "-f", s.ClientKey)
	// -a 2: few KDF rounds, so that tests don't spend CPU time on bcrypt.
	s.keygenRun(t, "-t", "ed25519", "-a", "2", "-N", s.EncryptedKeyPassphrase, "-C", "sshdtest encrypted client", "-f", s.EncryptedClientKey)
	var authorized []byte
	for _, k := range []string{s.ClientKey, s.EncryptedClientKey} {
		pub, err := os.ReadFile(k + ".pub")
		if err != nil {
			t.Fatalf("sshdtest: %v", err)
		}
		authorized = append(authorized, pub...)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "authorized_keys"), authorized, 0o600); err != nil {
		t.Fatalf("sshdtest: %v", err)
	}

	t.Cleanup(s.Stop)
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("sshdtest: pick a free port: %v", err)
		}
		s.Port = port
		s.updateKnownHostsLine(t)
		err = s.start()
		if err == nil {
			return s
		}
		if !errors.Is(err, errBind) || attempt == bindAttempts {
			t.Fatalf("sshdtest: %v\nsshd log:\n%s", err, s.Log())
		}
	}
}

// Addr is "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Log returns everything sshd logged so far, across restarts (LogLevel
// VERBOSE). Put it in failure messages.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no sshd log: %v)", err)
	}
	return string(b)
}

// Pid is the process id of the listening sshd, or 0 while it is stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Stop terminates sshd and the processes serving its connections, as an
// outage would: SIGTERM, SIGKILL after a grace period, and it waits for the
// listener to exit. Connected clients print, depending on timing,
// "Connection to 127.0.0.1 closed by remote host.", "Connection closed by
// 127.0.0.1 port N" or "client_loop: send disconnect: Broken pipe". Stop is
// idempotent and is also registered with t.Cleanup by Start.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

// Restart stops sshd and starts it again on the same port with the same keys,
// as an outage would. Existing connections are dropped.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("sshdtest: restart on port %d: %v\nsshd log:\n%s", s.Port, err, s.Log())
	}
}

// RotateHostKey replaces the host keys with new ones and restarts sshd on the
// same port, so clients with the old known_hosts entry see "REMOTE HOST
// IDENTIFICATION HAS CHANGED". HostKeyFingerprint, RSAHostKeyFingerprint and
// KnownHostsLine are updated.
func (s *Server) RotateHostKey(t testing.TB) {
	t.Helper()
	s.Stop()
	for _, name := range []string{"host_ed25519", "host_rsa"} {
		for _, f := range []string{name, name + ".pub"} {
			if err := os.Remove(filepath.Join(s.Dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("sshdtest: %v", err)
			}
		}
	}
	s.generateHostKeys(t)
	s.updateKnownHostsLine(t)
	if err := s.start(); err != nil {
		t.Fatalf("sshdtest: restart on port %d with new host keys: %v\nsshd log:\n%s", s.Port, err, s.Log())
	}
}

// WriteKnownHosts writes a known_hosts file (mode 0600) that holds
// KnownHostsLine, for clients run with StrictHostKeyChecking=yes.
func (s *Server) WriteKnownHosts(t testing.TB, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s.KnownHostsLine+"\n"), 0o600); err != nil {
		t.Fatalf("sshdtest: write known_hosts: %v", err)
	}
}

func (s *Server) generateHostKeys(t testing.TB) {
	t.Helper()
	ed := filepath.Join(s.Dir, "host_ed25519")
	s.keygenRun(t, "-t", "ed25519", "-N", "", "-C", "sshdtest host", "-f", ed)
	s.HostKeyFingerprint = fingerprint(t, ed+".pub")
	if s.opts.RSAHostKey {
		rsa := filepath.Join(s.Dir, "host_rsa")
		s.keygenRun(t, "-t", "rsa", "-b", "2048", "-N", "", "-C", "sshdtest host", "-f", rsa)
		s.RSAHostKeyFingerprint = fingerprint(t, rsa+".pub")
	}
}

func (s *Server) updateKnownHostsLine(t testing.TB) {
	t.Helper()
	pub := readPublicKey(t, filepath.Join(s.Dir, "host_ed25519.pub"))
	s.KnownHostsLine = knownhosts.Line([]string{knownhosts.Normalize(s.Addr())}, pub)
}

func (s *Server) keygenRun(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(s.keygen, append([]string{"-q"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("sshdtest: ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func readPublicKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("sshdtest: %v", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatalf("sshdtest: parse %s: %v", path, err)
	}
	return pub
}

func fingerprint(t testing.TB, pubPath string) string {
	t.Helper()
	return ssh.FingerprintSHA256(readPublicKey(t, pubPath))
}

// configText renders sshd_config for the current port.
func (s *Server) configText() string {
	lines := []string{
		"# generated by internal/sshdtest",
		"ListenAddress 127.0.0.1",
		"Port " + strconv.Itoa(s.Port),
		"AddressFamily inet",
		"HostKey " + filepath.Join(s.Dir, "host_ed25519"),
	}
	if s.opts.RSAHostKey {
		lines = append(lines, "HostKey "+filepath.Join(s.Dir, "host_rsa"))
	}
	lines = append(lines,
		"PidFile "+filepath.Join(s.Dir, "sshd.pid"),
		"AuthorizedKeysFile "+filepath.Join(s.Dir, "authorized_keys"),
		"StrictModes no",
		"UsePAM no",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"MaxStartups 200",
		"LoginGraceTime 30",
		"X11Forwarding no",
		"PrintMotd no",
		"LogLevel VERBOSE",
	)
	if penaltiesSupported(s.sshd) {
		// OpenSSH 9.8+ would otherwise refuse 127.0.0.1 for a while after
		// tests that fail authentication on purpose.
		lines = append(lines, "PerSourcePenalties no")
	}
	if s.opts.MaxSessions > 0 {
		lines = append(lines, "MaxSessions "+strconv.Itoa(s.opts.MaxSessions))
	}
	if !s.opts.NoSFTP {
		// internal-sftp: no shell is started, so no rc file can interfere.
		lines = append(lines, "Subsystem sftp internal-sftp")
	}
	lines = append(lines, s.opts.ExtraConfig...)
	return strings.Join(lines, "\n") + "\n"
}

var (
	penaltiesOnce sync.Once
	penaltiesOK   bool
)

// penaltiesSupported reports whether sshd knows PerSourcePenalties (9.8+).
func penaltiesSupported(sshd string) bool {
	penaltiesOnce.Do(func() {
		out, _ := exec.Command(sshd, "-V").CombinedOutput() // older sshd print the version in their usage text
		m := regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`).FindSubmatch(out)
		if m == nil {
			return
		}
		major, _ := strconv.Atoi(string(m[1]))
		minor, _ := strconv.Atoi(string(m[2]))
		penaltiesOK = major > 9 || major == 9 && minor >= 8
	})
	return penaltiesOK
}

// errBind marks a start that failed because the port was taken.
var errBind = errors.New("sshd could not bind its port")

// start writes the config and runs sshd on s.Port until it is ready.
func (s *Server) start() error {
	if err := os.WriteFile(s.config, []byte(s.configText()), 0o600); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	offset, err := logf.Seek(0, 2)
	if err != nil {
		return err
	}

	// -D: stay in the foreground; -e: log to stderr, which is the log file.
	cmd := exec.Command(s.sshd, "-D", "-e", "-f", s.config)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // keep terminal signals meant for the test away from sshd
		Pdeathsig: syscall.SIGTERM, // if the test binary dies, the listener goes with it
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.sshd, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()

	if err := s.waitReady(p, offset); err != nil {
		p.stop()
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// waitReady polls until this sshd logged that it listens and the port
// answers with an SSH banner. Checking the log first makes sure the banner
// comes from this sshd and not from another test's server that took the port.
func (s *Server) waitReady(p *process, logOffset int64) error {
	listening := fmt.Sprintf("Server listening on 127.0.0.1 port %d.", s.Port)
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			log := s.logSince(logOffset)
			if strings.Contains(log, "Address already in use") || strings.Contains(log, "Cannot bind any address") {
				return fmt.Errorf("%w %d", errBind, s.Port)
			}
			return fmt.Errorf("sshd exited before it was ready (%v)", p.err)
		default:
		}
		if strings.Contains(s.logSince(logOffset), listening) {
			if lastErr = readBanner(s.Addr()); lastErr == nil {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("sshd not ready on %s after %v (last probe: %v)", s.Addr(), readyTimeout, lastErr)
}

func (s *Server) logSince(offset int64) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}

// readBanner connects to addr and reads the server's identification line.
func readBanner(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read banner: %w", err)
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	return nil
}

// stop ends this sshd and every process it forked to serve connections.
// Each connection is served by a process that calls setsid, so a process
// group signal would miss them: stop pauses the listener so that it cannot
// fork, collects its descendants from /proc, sends SIGTERM to all of them
// (a connection process answers with "closed by remote host", as in a real
// outage), waits up to stopGrace, SIGKILLs what is left and reaps the
// listener.
func (p *process) stop() {
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	tree := descendants(pid)
	for _, d := range tree {
		_ = d.signal(syscall.SIGTERM)
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	_ = syscall.Kill(pid, syscall.SIGCONT)

	deadline := time.Now().Add(stopGrace)
	for time.Now().Before(deadline) && (!p.exited() || anyAlive(tree)) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, d := range tree {
		_ = d.signal(syscall.SIGKILL)
	}
	_ = p.cmd.Process.Kill() // no-op error once it has exited
	<-p.done
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// procID names a process by pid and start time, so that a recycled pid is
// never signalled.
type procID struct {
	pid   int
	start string // field 22 of /proc/PID/stat
}

// procStat returns the parent pid, the state and the start time of pid.
func procStat(pid int) (ppid int, state, start string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", "", false
	}
	// "pid (comm) state ppid ...": comm may contain anything, so split after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, "", "", false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, "", "", false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, "", "", false
	}
	return ppid, f[0], f[19], true
}

// alive reports whether the process still runs (a zombie does not count).
func (d procID) alive() bool {
	_, state, start, ok := procStat(d.pid)
	return ok && start == d.start && state != "Z"
}

func (d procID) signal(sig syscall.Signal) error {
	if !d.alive() {
		return nil
	}
	return syscall.Kill(d.pid, sig)
}

func anyAlive(ds []procID) bool {
	for _, d := range ds {
		if d.alive() {
			return true
		}
	}
	return false
}

// descendants lists the processes below root, read from /proc.
func descendants(root int) []procID {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]procID{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, start, ok := procStat(pid); ok {
			children[ppid] = append(children[ppid], procID{pid, start})
		}
	}
	var out []procID
	queue := []int{root}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		for _, c := range children[next] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
	}
	return out
}

// lockedAccount reports whether /etc/shadow marks name as locked. It is
// false when the file cannot be read.
func lockedAccount(name string) bool {
	b, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) >= 2 && f[0] == name {
			return strings.HasPrefix(f[1], "!")
		}
	}
	return false
}

// freePort asks the kernel for a free port on 127.0.0.1. Someone else may
// take it before sshd binds; Start retries then.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
