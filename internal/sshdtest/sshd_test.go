package sshdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clientArgs are the options every real OpenSSH client gets in these tests:
// no user or system config, no agent, strict host-key checking against kh.
func clientArgs(kh, key string) []string {
	return []string{
		"-F", "/dev/null",
		"-o", "UserKnownHostsFile=" + kh,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "ConnectTimeout=5",
		"-i", key,
	}
}

// run runs an OpenSSH client with stdin and returns its combined output and
// exit code (-1 if it did not start or timed out). It is safe to call from
// any goroutine.
func run(t *testing.T, stdin string, extraEnv []string, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(cleanEnv(), extraEnv...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default: // not started, or killed by the timeout
		return fmt.Sprintf("%s%s: %v", out, name, err), -1
	}
}

// cleanEnv is the test's environment without the user's agent and askpass.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSH_AUTH_SOCK=") && !strings.HasPrefix(kv, "SSH_ASKPASS") {
			env = append(env, kv)
		}
	}
	return env
}

// sftpBatch runs `sftp -b -` with commands against s, with the unencrypted
// client key.
func sftpBatch(t *testing.T, s *Server, kh string, commands ...string) (string, int) {
	t.Helper()
	return sftpBatchOpts(t, s, kh, nil, commands...)
}

// sftpBatchOpts is sftpBatch with extra client options.
func sftpBatchOpts(t *testing.T, s *Server, kh string, opts []string, commands ...string) (string, int) {
	t.Helper()
	args := append(append(clientArgs(kh, s.ClientKey), opts...), "-b", "-", "-P", strconv.Itoa(s.Port), s.User+"@"+s.Host)
	return run(t, strings.Join(commands, "\n")+"\n", nil, "sftp", args...)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("uploaded file: %v", err)
	}
	if string(got) != want {
		t.Fatalf("%s holds %q, want %q", path, got, want)
	}
}

func TestUploadWithRealClients(t *testing.T) {
	s := Start(t, Options{})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	s.WriteKnownHosts(t, kh)
	src := filepath.Join(t.TempDir(), "small.txt")
	writeFile(t, src, "hello sshd\n")
	dst := t.TempDir()

	t.Run("sftp put and rename", func(t *testing.T) {
		part, final := filepath.Join(dst, "a.txt.part"), filepath.Join(dst, "a.txt")
		writeFile(t, final, "old content")
		out, code := sftpBatch(t, s, kh, "put "+src+" "+part, "rename "+part+" "+final)
		if code != 0 {
			t.Fatalf("sftp exit %d:\n%s\nsshd log:\n%s", code, out, s.Log())
		}
		wantFile(t, final, "hello sshd\n")
	})

	t.Run("scp", func(t *testing.T) {
		args := append(clientArgs(kh, s.ClientKey), "-o", "BatchMode=yes", "-P", strconv.Itoa(s.Port),
			src, s.User+"@"+s.Host+":"+filepath.Join(dst, "b.txt"))
		if out, code := run(t, "", nil, "scp", args...); code != 0 {
			t.Fatalf("scp exit %d:\n%s\nsshd log:\n%s", code, out, s.Log())
		}
		wantFile(t, filepath.Join(dst, "b.txt"), "hello sshd\n")
	})

	t.Run("encrypted key through askpass", func(t *testing.T) {
		askpass := filepath.Join(t.TempDir(), "askpass")
		writeFile(t, askpass, "#!/bin/sh\nprintf '%s\\n' '"+s.EncryptedKeyPassphrase+"'\n")
		if err := os.Chmod(askpass, 0o700); err != nil {
			t.Fatal(err)
		}
		// BatchMode=no must come before -b, which would turn it on.
		args := append(clientArgs(kh, s.EncryptedClientKey), "-o", "BatchMode=no", "-b", "-",
			"-P", strconv.Itoa(s.Port), s.User+"@"+s.Host)
		env := []string{"SSH_ASKPASS=" + askpass, "SSH_ASKPASS_REQUIRE=force"}
		out, code := run(t, "put "+src+" "+filepath.Join(dst, "c.txt")+"\n", env, "sftp", args...)
		if code != 0 {
			t.Fatalf("sftp exit %d:\n%s\nsshd log:\n%s", code, out, s.Log())
		}
		wantFile(t, filepath.Join(dst, "c.txt"), "hello sshd\n")
	})
}

func TestRestartKeepsPortAndHostKey(t *testing.T) {
	s := Start(t, Options{})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	s.WriteKnownHosts(t, kh)
	src := filepath.Join(t.TempDir(), "f")
	writeFile(t, src, "x")
	dst := t.TempDir()
	port, pid := s.Port, s.Pid()

	s.Stop()
	s.Stop() // idempotent
	if s.Pid() != 0 {
		t.Fatalf("Pid() = %d after Stop, want 0", s.Pid())
	}
	out, code := sftpBatch(t, s, kh, "put "+src+" "+filepath.Join(dst, "down"))
	want := fmt.Sprintf("connect to host 127.0.0.1 port %d: Connection refused", port)
	if code != 255 || !strings.Contains(out, want) {
		t.Fatalf("while stopped: sftp exit %d, output:\n%s\nwant exit 255 and %q", code, out, want)
	}

	s.Restart(t)
	if s.Port != port || s.Pid() == pid || s.Pid() == 0 {
		t.Fatalf("after Restart: port %d pid %d, before: port %d pid %d", s.Port, s.Pid(), port, pid)
	}
	if out, code := sftpBatch(t, s, kh, "put "+src+" "+filepath.Join(dst, "up")); code != 0 {
		t.Fatalf("after Restart: sftp exit %d:\n%s\nsshd log:\n%s", code, out, s.Log())
	}
	wantFile(t, filepath.Join(dst, "up"), "x")
}

func TestRotateHostKey(t *testing.T) {
	s := Start(t, Options{RSAHostKey: true})
	oldKH := filepath.Join(t.TempDir(), "known_hosts")
	s.WriteKnownHosts(t, oldKH)
	oldFP, oldRSA, port := s.HostKeyFingerprint, s.RSAHostKeyFingerprint, s.Port
	if !strings.HasPrefix(oldFP, "SHA256:") || !strings.HasPrefix(oldRSA, "SHA256:") {
		t.Fatalf("fingerprints %q, %q: want SHA256:...", oldFP, oldRSA)
	}
	wantLine := fmt.Sprintf("[127.0.0.1]:%d ssh-ed25519 AAAA", port)
	if !strings.HasPrefix(s.KnownHostsLine, wantLine) {
		t.Fatalf("KnownHostsLine = %q, want prefix %q", s.KnownHostsLine, wantLine)
	}

	s.RotateHostKey(t)
	if s.Port != port || s.HostKeyFingerprint == oldFP || s.RSAHostKeyFingerprint == oldRSA {
		t.Fatalf("after rotation: port %d fingerprints %s %s; before: %d %s %s",
			s.Port, s.HostKeyFingerprint, s.RSAHostKeyFingerprint, port, oldFP, oldRSA)
	}
	out, code := sftpBatch(t, s, oldKH, "pwd")
	for _, want := range []string{
		"WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!",
		"\n" + s.HostKeyFingerprint + ".",
		"Host key verification failed.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("old known_hosts: output lacks %q", want)
		}
	}
	if code != 255 {
		t.Errorf("old known_hosts: exit %d, want 255", code)
	}
	if t.Failed() {
		t.Fatalf("output:\n%s", out)
	}

	newKH := filepath.Join(t.TempDir(), "known_hosts")
	s.WriteKnownHosts(t, newKH)
	if out, code := sftpBatch(t, s, newKH, "pwd"); code != 0 {
		t.Fatalf("new known_hosts: sftp exit %d:\n%s", code, out)
	}
}

func TestNoSFTP(t *testing.T) {
	s := Start(t, Options{NoSFTP: true})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	s.WriteKnownHosts(t, kh)
	out, code := sftpBatch(t, s, kh, "pwd")
	if code != 255 || !strings.Contains(out, "subsystem request failed on channel 0") {
		t.Fatalf("sftp exit %d, output:\n%s\nwant 255 and the subsystem failure", code, out)
	}
}

func TestExtraConfig(t *testing.T) {
	u := Start(t, Options{}).User // the account to deny
	s := Start(t, Options{ExtraConfig: []string{"DenyUsers " + u}})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	s.WriteKnownHosts(t, kh)
	out, code := sftpBatch(t, s, kh, "pwd")
	want := u + "@127.0.0.1: Permission denied (publickey)."
	if code != 255 || !strings.Contains(out, want) {
		t.Fatalf("sftp exit %d, output:\n%s\nwant 255 and %q", code, out, want)
	}
	if !strings.Contains(s.Log(), "because listed in DenyUsers") {
		t.Fatalf("sshd log does not explain the refusal:\n%s", s.Log())
	}
}

// TestStopEndsConnections proves Stop leaves no process behind, including
// the ones serving open connections.
func TestStopEndsConnections(t *testing.T) {
	s := Start(t, Options{})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	s.WriteKnownHosts(t, kh)

	args := append(clientArgs(kh, s.ClientKey), "-o", "BatchMode=yes", "-N", "-p", strconv.Itoa(s.Port), s.User+"@"+s.Host)
	cmd := exec.Command("ssh", args...)
	cmd.Env = cleanEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	poll(t, "the ssh -N login", func() bool { return strings.Contains(s.Log(), "Accepted publickey for "+s.User) })

	tree := descendants(s.Pid())
	if len(tree) == 0 {
		t.Fatalf("no process serves the ssh -N connection")
	}
	s.Stop()
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		// What ssh prints depends on the moment the processes die:
		// "Connection to 127.0.0.1 closed by remote host.", "Connection
		// closed by 127.0.0.1 port N", "client_loop: send disconnect: Broken
		// pipe".
		if err == nil {
			t.Fatalf("ssh -N exited 0 after Stop; stderr: %q", stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("ssh -N still connected 10s after Stop")
	}
	poll(t, "the connection's sshd processes to end", func() bool { return !anyAlive(tree) })
}

func TestParallelServers(t *testing.T) {
	for i := range 3 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			s := Start(t, Options{MaxSessions: 2})
			kh := filepath.Join(t.TempDir(), "known_hosts")
			s.WriteKnownHosts(t, kh)
			src := filepath.Join(t.TempDir(), "f")
			writeFile(t, src, "server "+strconv.Itoa(i))
			dst := filepath.Join(t.TempDir(), "f")
			if out, code := sftpBatch(t, s, kh, "put "+src+" "+dst); code != 0 {
				t.Fatalf("sftp exit %d:\n%s\nsshd log:\n%s", code, out, s.Log())
			}
			wantFile(t, dst, "server "+strconv.Itoa(i))
		})
	}
}

// TestMaxSessions shows the option reaching sshd: with MaxSessions 1, a
// second session through a ControlMaster is refused while the first is open.
func TestMaxSessions(t *testing.T) {
	s := Start(t, Options{MaxSessions: 1})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	s.WriteKnownHosts(t, kh)
	sockDir, err := os.MkdirTemp("", "cm") // unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	mux := []string{"-o", "ControlPath=" + filepath.Join(sockDir, "%C")}

	master := background(t, "ssh", append(append(clientArgs(kh, s.ClientKey), mux...),
		"-o", "BatchMode=yes", "-o", "ControlMaster=yes", "-N", "-p", strconv.Itoa(s.Port), s.User+"@"+s.Host)...)
	defer master.Close()
	check := append(append(clientArgs(kh, s.ClientKey), mux...), "-O", "check", "-p", strconv.Itoa(s.Port), s.User+"@"+s.Host)
	poll(t, "the master", func() bool { _, code := run(t, "", nil, "ssh", check...); return code == 0 })

	// The first session stays open while sftp waits for commands on stdin.
	mux = append(mux, "-o", "ControlMaster=no")
	first := background(t, "sftp", append(append(clientArgs(kh, s.ClientKey), mux...),
		"-b", "-", "-P", strconv.Itoa(s.Port), s.User+"@"+s.Host)...)
	defer first.Close()
	poll(t, "the first session", func() bool { return strings.Contains(s.Log(), "Starting session: subsystem 'sftp'") })

	out, _ := sftpBatchOpts(t, s, kh, mux, "pwd")
	if want := "Session open refused by peer"; !strings.Contains(out, want) {
		t.Fatalf("second session: output lacks %q:\n%s", want, out)
	}
}

// background starts a client whose stdin stays open until Close.
type bgClient struct {
	stdin  io.Closer
	cmd    *exec.Cmd
	exited chan struct{}
}

func background(t *testing.T, name string, args ...string) *bgClient {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = cleanEnv()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &bgClient{stdin: stdin, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	return c
}

// Close kills the client and waits for it.
func (c *bgClient) Close() {
	c.stdin.Close()
	_ = c.cmd.Process.Kill()
	<-c.exited
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
