package sftpd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	testUser     = "alice"
	testPassword = "Secr3t-pass"
)

// fixture is a running server with one account and a client key for it.
type fixture struct {
	srv        *Server
	home       string // the server's Home, where tests upload to
	key        string // the client's private key file
	knownHosts string
}

// requireClients skips when the OpenSSH clients are missing, unless
// DROPSHIP_REQUIRE_SSHD=1 (set in CI), which makes it a failure.
func requireClients(t *testing.T) {
	t.Helper()
	for _, name := range []string{"ssh", "scp", "sftp"} {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("DROPSHIP_REQUIRE_SSHD") == "1" {
				t.Fatalf("%s not found; install openssh-client", name)
			}
			t.Skipf("%s not found; install openssh-client", name)
		}
	}
}

// start runs a server with account alice (password and the fixture's key)
// unless cfg.Users is set, and writes the client's key and known_hosts.
func start(t *testing.T, cfg Config) *fixture {
	t.Helper()
	requireClients(t)
	dir := t.TempDir()
	fx := &fixture{home: t.TempDir(), key: filepath.Join(dir, "id_ed25519"), knownHosts: filepath.Join(dir, "known_hosts")}

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "test client")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fx.key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Users == nil {
		cfg.Users = map[string]Account{testUser: {Password: testPassword, AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}}}
	}
	if cfg.Home == "" {
		cfg.Home = fx.home
	}
	fx.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fx.srv.Close() })
	if err := os.WriteFile(fx.knownHosts, []byte(fx.srv.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fx
}

// opts are the options for every OpenSSH client: no config files, no agent,
// strict host-key checking.
func (fx *fixture) opts() []string {
	return []string{
		"-F", "/dev/null",
		"-o", "UserKnownHostsFile=" + fx.knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "IdentityAgent=none",
		"-o", "IdentitiesOnly=yes",
		"-o", "ConnectTimeout=5",
	}
}

// keyOpts log in with the fixture's key and never prompt.
func (fx *fixture) keyOpts() []string {
	return append(fx.opts(), "-o", "BatchMode=yes", "-i", fx.key)
}

func (fx *fixture) dest() string { return testUser + "@127.0.0.1" }

func (fx *fixture) port() string { return strconv.Itoa(fx.srv.Port()) }

// scp uploads src to the remote path dst with key auth.
func (fx *fixture) scp(t *testing.T, extra []string, src, dst string) (string, int) {
	t.Helper()
	args := append(fx.keyOpts(), extra...)
	args = append(args, "-P", fx.port(), src, fx.dest()+":"+dst)
	return run(t, "", nil, "scp", args...)
}

// sftp runs a batch of sftp commands with key auth.
func (fx *fixture) sftp(t *testing.T, extra []string, commands ...string) (string, int) {
	t.Helper()
	args := append(fx.keyOpts(), extra...)
	args = append(args, "-b", "-", "-P", fx.port(), fx.dest())
	return run(t, strings.Join(commands, "\n")+"\n", nil, "sftp", args...)
}

// run runs a client and returns its combined output and exit code (128+N
// when signal N killed it, -1 if it did not start or timed out). It is safe to call from any goroutine.
func run(t *testing.T, stdin string, env []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(cleanEnv(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ctx.Err() == nil {
			return string(out), 128 + int(ws.Signal()) // as a shell says it
		}
		return string(out), exit.ExitCode()
	default: // not started, or killed by the timeout
		return fmt.Sprintf("%s%s: %v", out, name, err), -1
	}
}

// cleanEnv is the environment without the user's agent and askpass.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSH_AUTH_SOCK=") && !strings.HasPrefix(kv, "SSH_ASKPASS") && !strings.HasPrefix(kv, "DISPLAY=") {
			env = append(env, kv)
		}
	}
	return env
}

// localFile creates a local file of size bytes with varied content.
func localFile(t *testing.T, name string, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func wantFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, want %d bytes of the source", path, len(got), len(want))
	}
}

// wantOutput fails unless the client exited with code and printed every
// line of want.
func wantOutput(t *testing.T, out string, code, wantCode int, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	if code != wantCode {
		t.Errorf("exit code %d, want %d", code, wantCode)
	}
	if t.Failed() {
		t.Fatalf("output:\n%s", out)
	}
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUploadWithSCPAndSFTP(t *testing.T) {
	fx := start(t, Config{})
	src, data := localFile(t, "data.bin", 200_000)

	out, code := fx.scp(t, nil, src, filepath.Join(fx.home, "scp.bin"))
	wantOutput(t, out, code, 0)
	wantFile(t, filepath.Join(fx.home, "scp.bin"), data)

	// A relative remote path lands in Home.
	out, code = fx.scp(t, nil, src, "relative.bin")
	wantOutput(t, out, code, 0)
	wantFile(t, filepath.Join(fx.home, "relative.bin"), data)

	// The delivery pattern: put to a temporary name, then rename over an
	// existing file (posix-rename@openssh.com), plus mkdir, rm and ls.
	final := filepath.Join(fx.home, "dir", "final.bin")
	part := filepath.Join(fx.home, "dir", ".final.bin.part")
	out, code = fx.sftp(t, nil,
		"pwd",
		"mkdir "+filepath.Join(fx.home, "dir"),
		"put "+src+" "+final,
		"progress",
		"put "+src+" "+part,
		"rename "+part+" "+final,
		"put "+src+" "+filepath.Join(fx.home, "dir", "gone"),
		"rm "+filepath.Join(fx.home, "dir", "gone"),
		"ls "+filepath.Join(fx.home, "dir"),
	)
	wantOutput(t, out, code, 0, "Remote working directory: "+fx.home, "sftp> rename ")
	wantFile(t, final, data)
	entries, err := os.ReadDir(filepath.Join(fx.home, "dir"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("remote dir holds %v (%v), want only final.bin", entries, err)
	}

	st := fx.srv.Stats()
	if st.Connections != 3 || st.Logins != 3 || st.Sessions != 3 || st.AuthAttempts["publickey"] != 3 {
		t.Fatalf("stats %+v, want 3 connections, logins, sessions and publickey attempts", st)
	}
}

func TestDownload(t *testing.T) {
	fx := start(t, Config{})
	src, data := localFile(t, "remote.bin", 50_000)
	dst := filepath.Join(t.TempDir(), "local.bin")
	args := append(fx.keyOpts(), "-P", fx.port(), fx.dest()+":"+src, dst)
	out, code := run(t, "", nil, "scp", args...)
	wantOutput(t, out, code, 0)
	wantFile(t, dst, data)
}

func TestRenameWithoutPosixRenameKeepsTarget(t *testing.T) {
	fx := start(t, Config{})
	src, _ := localFile(t, "f", 10)
	a, b := filepath.Join(fx.home, "a"), filepath.Join(fx.home, "b")
	// "rename -l" forces the plain SSH_FXP_RENAME, which must not replace.
	out, code := fx.sftp(t, nil, "put "+src+" "+a, "put "+src+" "+b, "rename -l "+a+" "+b)
	wantOutput(t, out, code, 1, fmt.Sprintf("remote rename %q to %q: Failure", a, b))
}

func TestFaultDenyWrite(t *testing.T) {
	fx := start(t, Config{Faults: Faults{DenyWrite: true}})
	src, _ := localFile(t, "small.txt", 12)
	dst := filepath.Join(fx.home, "small.txt")
	out, code := fx.scp(t, nil, src, dst)
	wantOutput(t, out, code, 1, fmt.Sprintf("scp: dest open %q: Permission denied", dst), "scp: failed to upload file "+src)

	out, code = fx.sftp(t, nil, "put "+src+" "+dst)
	wantOutput(t, out, code, 1, fmt.Sprintf("dest open %q: Permission denied", dst))

	// Faults change at run time.
	fx.srv.SetFaults(Faults{})
	out, code = fx.scp(t, nil, src, dst)
	wantOutput(t, out, code, 0)
}

func TestFaultDiskFull(t *testing.T) {
	fx := start(t, Config{Faults: Faults{DiskFullAfter: 100_000}})
	src, data := localFile(t, "big.bin", 300_000)
	dst := filepath.Join(fx.home, "big.bin")
	out, code := fx.scp(t, nil, src, dst)
	wantOutput(t, out, code, 1, fmt.Sprintf("scp: write remote %q: Failure", dst), "scp: failed to upload file "+src)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:100_000], data[:100_000]) {
		t.Fatalf("the first 100000 bytes that fitted differ from the source")
	}
	t.Logf("partial file after disk full: %d bytes", len(got))

	out, code = fx.sftp(t, nil, "put "+src+" "+dst)
	wantOutput(t, out, code, 1, fmt.Sprintf("write remote %q: Failure", dst))
}

func TestFaultDisconnect(t *testing.T) {
	fx := start(t, Config{Faults: Faults{DisconnectAfter: 100_000}})
	src, _ := localFile(t, "big.bin", 1_000_000)
	dst := filepath.Join(fx.home, "big.bin")
	// The second line varies with timing ("scp: Connection closed", "scp:
	// Couldn't send packet: Connection reset by peer", "Couldn't send
	// packet: Broken pipe"); ssh's line does not.
	out, code := fx.scp(t, nil, src, dst)
	wantOutput(t, out, code, 255, "Connection to 127.0.0.1 closed by remote host.")
	// sftp may instead be killed by SIGPIPE (141) writing to the ssh that
	// just exited, as seen under load.
	out, code = fx.sftp(t, nil, "put "+src+" "+dst)
	if code == 128+int(syscall.SIGPIPE) {
		code = 255
	}
	wantOutput(t, out, code, 255, "Connection to 127.0.0.1 closed by remote host.")
	if st := fx.srv.Stats(); st.Connections != 2 {
		t.Fatalf("stats %+v, want 2 connections", st)
	}
}

func TestFaultHang(t *testing.T) {
	t.Parallel() // mostly waits for timeouts
	fx := start(t, Config{Faults: Faults{HangAfter: 100_000}})
	src, data := localFile(t, "big.bin", 1_000_000)
	dst := filepath.Join(fx.home, "big.bin")

	t.Run("ServerAlive detects it", func(t *testing.T) {
		begin := time.Now()
		out, code := fx.scp(t, []string{"-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"}, src, dst)
		wantOutput(t, out, code, 255, "Timeout, server 127.0.0.1 not responding.")
		t.Logf("detected after %v", time.Since(begin).Round(100*time.Millisecond))
	})

	t.Run("clearing the fault releases it", func(t *testing.T) {
		done := make(chan struct{})
		var out string
		var code int
		go func() {
			defer close(done)
			out, code = fx.scp(t, nil, src, dst)
		}()
		poll(t, "the connection to freeze", fx.srv.anyHung)
		select {
		case <-done:
			t.Fatalf("scp ended while the connection was frozen:\n%s", out)
		default:
		}
		fx.srv.SetFaults(Faults{})
		<-done
		wantOutput(t, out, code, 0)
		wantFile(t, dst, data)
	})
}

// anyHung reports whether a connection is frozen by HangAfter.
func (s *Server) anyHung() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.stateMu.Lock()
		hung := c.hung
		c.stateMu.Unlock()
		if hung {
			return true
		}
	}
	return false
}

func TestFaultRejectRename(t *testing.T) {
	fx := start(t, Config{Faults: Faults{RejectRename: true}})
	src, _ := localFile(t, "f", 10)
	part, final := filepath.Join(fx.home, "f.part"), filepath.Join(fx.home, "f")
	out, code := fx.sftp(t, nil, "put "+src+" "+part, "rename "+part+" "+final)
	wantOutput(t, out, code, 1, fmt.Sprintf("remote rename %q to %q: Permission denied", part, final))
}

func TestFaultWriteDelay(t *testing.T) {
	const delay = 300 * time.Millisecond
	fx := start(t, Config{Faults: Faults{WriteDelay: delay}})
	src, data := localFile(t, "f", 1000) // one write request
	begin := time.Now()
	out, code := fx.scp(t, nil, src, filepath.Join(fx.home, "f"))
	wantOutput(t, out, code, 0)
	wantFile(t, filepath.Join(fx.home, "f"), data)
	if d := time.Since(begin); d < delay {
		t.Fatalf("upload took %v, want at least one WriteDelay (%v)", d, delay)
	}
	if n := fx.srv.Stats().MaxWritesInFlight; n != 1 {
		t.Errorf("MaxWritesInFlight = %d after one write request, want 1", n)
	}
}

// TestControlMaster runs sftp sessions through one `ssh -N` master
// connection, with keepalives going on.
func TestControlMaster(t *testing.T) {
	t.Parallel() // mostly waits for keepalives
	fx := start(t, Config{})
	sockDir, err := os.MkdirTemp("", "cm") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	control := filepath.Join(sockDir, "%C")

	args := append(fx.keyOpts(), "-N", "-o", "ControlMaster=yes", "-o", "ControlPath="+control,
		"-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2", "-p", fx.port(), fx.dest())
	master := exec.Command("ssh", args...)
	master.Env = cleanEnv()
	var masterOut bytes.Buffer
	master.Stderr = &masterOut
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- master.Wait() }()
	t.Cleanup(func() {
		_ = master.Process.Kill()
		<-exited
	})
	check := append(fx.opts(), "-o", "ControlPath="+control, "-O", "check", "-p", fx.port(), fx.dest())
	poll(t, "the master to listen", func() bool {
		_, code := run(t, "", nil, "ssh", check...)
		return code == 0
	})

	src, data := localFile(t, "f", 100_000)
	mux := []string{"-o", "ControlMaster=no", "-o", "ControlPath=" + control}
	errs := make(chan string, 3)
	for i := range 3 {
		go func() {
			out, code := fx.sftp(t, mux, "put "+src+" "+filepath.Join(fx.home, "f"+strconv.Itoa(i)))
			if code != 0 {
				out = fmt.Sprintf("exit %d: %s", code, out)
			} else {
				out = ""
			}
			errs <- out
		}()
	}
	for range 3 {
		if e := <-errs; e != "" {
			t.Error(e)
		}
	}
	for i := range 3 {
		wantFile(t, filepath.Join(fx.home, "f"+strconv.Itoa(i)), data)
	}
	poll(t, "two keepalives", func() bool { return fx.srv.Stats().Keepalives >= 2 })
	st := fx.srv.Stats()
	if st.Connections != 1 || st.Sessions != 3 {
		t.Fatalf("stats %+v, want 1 connection carrying 3 sftp sessions", st)
	}
	select {
	case err := <-exited:
		t.Fatalf("master exited (%v): %s", err, masterOut.String())
	default:
	}
}

// dial logs in with golang.org/x/crypto/ssh as the client.
func dial(t *testing.T, fx *fixture, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	t.Helper()
	return ssh.Dial("tcp", fx.srv.Addr(), &ssh.ClientConfig{
		User:            testUser,
		Auth:            auth,
		HostKeyCallback: ssh.FixedHostKey(fx.srv.HostKey()),
		Timeout:         5 * time.Second,
	})
}

func TestMaxSessions(t *testing.T) {
	fx := start(t, Config{MaxSessions: 1})
	c, err := dial(t, fx, ssh.Password(testPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s1, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewSession(); err == nil || !strings.Contains(err.Error(), "administratively prohibited") {
		t.Fatalf("second session: %v, want it refused", err)
	}
	s1.Close()
	// The slot is free again once the first session is gone.
	poll(t, "the session slot", func() bool {
		s, err := c.NewSession()
		if err == nil {
			s.Close()
		}
		return err == nil
	})
}

func TestOnlySFTPSubsystem(t *testing.T) {
	fx := start(t, Config{})
	c, err := dial(t, fx, ssh.Password(testPassword))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RequestPty("xterm", 24, 80, nil); err == nil {
		t.Errorf("pty-req accepted")
	}
	if err := s.Start("id"); err == nil {
		t.Errorf("exec accepted")
	}
	if err := s.RequestSubsystem("other"); err == nil {
		t.Errorf("subsystem other accepted")
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		t.Errorf("subsystem sftp refused: %v", err)
	}

	// What the real ssh prints when it asks for a command.
	args := append(fx.keyOpts(), "-p", fx.port(), fx.dest(), "true")
	out, code := run(t, "", nil, "ssh", args...)
	wantOutput(t, out, code, 255, "exec request failed on channel 0")
}

// askpass writes a script for SSH_ASKPASS that logs each prompt to a file
// and answers with the line of answers whose key is a substring of the
// prompt.
func askpass(t *testing.T, answers map[string]string) (script, promptLog string) {
	t.Helper()
	dir := t.TempDir()
	script, promptLog = filepath.Join(dir, "askpass"), filepath.Join(dir, "prompts")
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\nprintf '%%s\\n--\\n' \"$1\" >> '%s'\ncase \"$1\" in\n", promptLog)
	for k, v := range answers {
		fmt.Fprintf(&b, "*'%s'*) printf '%%s\\n' '%s' ;;\n", k, v)
	}
	b.WriteString("*) exit 1 ;;\nesac\n")
	if err := os.WriteFile(script, []byte(b.String()), 0o700); err != nil {
		t.Fatal(err)
	}
	return script, promptLog
}

// promptArgs make ssh ask through SSH_ASKPASS for the given method only.
func promptArgs(fx *fixture, method string) []string {
	return append(fx.opts(), "-o", "BatchMode=no", "-o", "PubkeyAuthentication=no",
		"-o", "PreferredAuthentications="+method, "-o", "NumberOfPasswordPrompts=1")
}

func TestPasswordAuth(t *testing.T) {
	fx := start(t, Config{})
	src, data := localFile(t, "f", 1000)
	dst := filepath.Join(fx.home, "f")

	script, prompts := askpass(t, map[string]string{"password": testPassword})
	env := []string{"SSH_ASKPASS=" + script, "SSH_ASKPASS_REQUIRE=force"}
	args := append(promptArgs(fx, "password"), "-P", fx.port(), src, fx.dest()+":"+dst)
	out, code := run(t, "", env, "scp", args...)
	wantOutput(t, out, code, 0)
	wantFile(t, dst, data)
	if b, _ := os.ReadFile(prompts); string(b) != "alice@127.0.0.1's password: \n--\n" {
		t.Fatalf("askpass prompts %q", b)
	}

	script, _ = askpass(t, map[string]string{"password": "wrong"})
	env = []string{"SSH_ASKPASS=" + script, "SSH_ASKPASS_REQUIRE=force"}
	before := fx.srv.Stats()
	out, code = run(t, "", env, "scp", args...)
	wantOutput(t, out, code, 255, "alice@127.0.0.1: Permission denied (password,publickey).")
	after := fx.srv.Stats()
	if n := after.AuthAttempts["password"] - before.AuthAttempts["password"]; n != 1 {
		t.Fatalf("%d password attempts for one wrong password, want 1", n)
	}
	if n := after.AuthFailures["password"] - before.AuthFailures["password"]; n != 1 {
		t.Fatalf("%d password failures, want 1", n)
	}

	if _, err := dial(t, fx, ssh.Password("wrong")); err == nil {
		t.Fatalf("wrong password accepted")
	}
	c, err := dial(t, fx, ssh.Password(testPassword))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

var otp = &KeyboardInteractive{
	Instruction: "Lab 2FA: answer both prompts\nThe code is on your token.",
	Questions: []Question{
		{Prompt: "Password: ", Answer: testPassword},
		{Prompt: "Verification code: ", Echo: true, Answer: "123456"},
	},
}

func TestKeyboardInteractive(t *testing.T) {
	fx := start(t, Config{Users: map[string]Account{testUser: {KeyboardInteractive: otp}}})
	src, data := localFile(t, "f", 1000)
	dst := filepath.Join(fx.home, "f")

	script, prompts := askpass(t, map[string]string{"Password: ": testPassword, "Verification code: ": "123456"})
	env := []string{"SSH_ASKPASS=" + script, "SSH_ASKPASS_REQUIRE=force"}
	args := append(promptArgs(fx, "keyboard-interactive"), "-P", fx.port(), src, fx.dest()+":"+dst)
	out, code := run(t, "", env, "scp", args...)
	// ssh prints the instruction as one log line on stderr: a bare "\n"
	// inside, "\r\n" at the end.
	wantOutput(t, out, code, 0, "Lab 2FA: answer both prompts\nThe code is on your token.\r\n")
	wantFile(t, dst, data)
	b, _ := os.ReadFile(prompts)
	if want := "(alice@127.0.0.1) Password: \n--\n(alice@127.0.0.1) Verification code: \n--\n"; string(b) != want {
		t.Fatalf("askpass prompts %q, want %q", b, want)
	}

	script, _ = askpass(t, map[string]string{"Password: ": testPassword, "Verification code: ": "000000"})
	env = []string{"SSH_ASKPASS=" + script, "SSH_ASKPASS_REQUIRE=force"}
	before := fx.srv.Stats().AuthFailures["keyboard-interactive"]
	out, code = run(t, "", env, "scp", args...)
	wantOutput(t, out, code, 255, "alice@127.0.0.1: Permission denied (keyboard-interactive).")
	if n := fx.srv.Stats().AuthFailures["keyboard-interactive"] - before; n != 1 {
		t.Fatalf("%d keyboard-interactive failures, want 1", n)
	}

	// The client sees the prompts and echo flags as configured.
	var gotInstr string
	var gotQ []string
	var gotEcho []bool
	c, err := dial(t, fx, ssh.KeyboardInteractive(func(name, instr string, q []string, echo []bool) ([]string, error) {
		gotInstr, gotQ, gotEcho = instr, q, echo
		return []string{testPassword, "123456"}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if gotInstr != otp.Instruction || fmt.Sprint(gotQ) != "[Password:  Verification code: ]" || fmt.Sprint(gotEcho) != "[false true]" {
		t.Fatalf("client saw instruction %q, questions %q, echo %v", gotInstr, gotQ, gotEcho)
	}
}

func TestHostKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host_key")
	users := map[string]Account{testUser: {Password: testPassword}}
	s1, err := New(Config{HostKeyFile: path, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	fp := s1.HostKeyFingerprint()
	s1.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host key file: %v, %v; want mode 0600", fi, err)
	}
	s2, err := New(Config{HostKeyFile: path, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.HostKeyFingerprint() != fp || len(fp) != len("SHA256:")+43 {
		t.Fatalf("fingerprint %q after restart, %q before", s2.HostKeyFingerprint(), fp)
	}
	// OpenSSH reads the saved key and agrees on the fingerprint.
	if out, err := exec.Command("ssh-keygen", "-l", "-f", path).CombinedOutput(); err != nil || !strings.Contains(string(out), fp) {
		t.Fatalf("ssh-keygen -l: %s (%v), want %s", out, err, fp)
	}
	want := fmt.Sprintf("[127.0.0.1]:%d ssh-ed25519 ", s2.Port())
	if !strings.HasPrefix(s2.KnownHostsLine(), want) {
		t.Fatalf("KnownHostsLine %q, want prefix %q", s2.KnownHostsLine(), want)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	fx := start(t, Config{Faults: Faults{HangAfter: 1}})
	src, _ := localFile(t, "f", 100_000)
	done := make(chan int)
	go func() {
		_, code := fx.scp(t, nil, src, filepath.Join(fx.home, "f"))
		done <- code
	}()
	poll(t, "the connection to freeze", fx.srv.anyHung)
	closed := make(chan error)
	go func() { closed <- fx.srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Close blocked on a frozen connection")
	}
	if code := <-done; code == 0 {
		t.Fatalf("scp succeeded although the server closed")
	}
	if err := fx.srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := dial(t, fx, ssh.Password(testPassword)); err == nil {
		t.Fatalf("login after Close")
	}
}

func TestNewValidates(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no users":      {},
		"relative home": {Home: "srv", Users: map[string]Account{testUser: {Password: "x"}}},
		"bad key file":  {HostKeyFile: "/dev/null", Users: map[string]Account{testUser: {Password: "x"}}},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}
