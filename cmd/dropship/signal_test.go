package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildDropship builds the command into a temporary folder.
func buildDropship(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("the go tool is needed to build dropship: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "dropship")
	out, err := exec.Command(goTool, "build", "-o", bin, "github.com/dropship/dropship/cmd/dropship").CombinedOutput()
	if err != nil {
		t.Fatalf("build dropship: %v\n%s", err, out)
	}
	return bin
}

// poll waits until cond holds, failing the test after limit.
func poll(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hasInotify reports whether process pid holds an inotify instance: the
// watcher was created and its first scan is starting.
func hasInotify(pid int) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && strings.Contains(l, "inotify") {
			return true
		}
	}
	return false
}

// exitsWithin sends sig to cmd and fails unless it exits within limit; it
// returns the exit status.
func exitsWithin(t *testing.T, cmd *exec.Cmd, sig syscall.Signal, limit time.Duration, stderr *bytes.Buffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	start := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Logf("exited %v after %v", cmd.ProcessState, time.Since(start).Round(time.Millisecond))
		return cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("still running %v after %v; stderr:\n%s", limit, sig, stderr)
	}
	return -1
}

// TestRunStopsDuringFirstScan: SIGTERM (and SIGINT) stop `run` within a
// second while the watcher is still scanning a folder of 200,000 files.
func TestRunStopsDuringFirstScan(t *testing.T) {
	if testing.Short() {
		t.Skip("builds dropship and creates 200,000 files")
	}
	bin := buildDropship(t)
	dir := t.TempDir()
	drop := filepath.Join(dir, "drop")
	const dirs, files = 400, 500
	for i := range dirs {
		d := filepath.Join(drop, fmt.Sprintf("d%03d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range files {
			fd, err := syscall.Open(filepath.Join(d, fmt.Sprintf("f%03d", j)), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			syscall.Close(fd)
		}
	}
	conf := filepath.Join(dir, "agent.toml")
	src := fmt.Sprintf(`[agent]
name = "sigtest"
state_dir = %q
[nats]
embedded_listen = "127.0.0.1:0"
[[target]]
name = "t"
host = "127.0.0.1"
port = 1
user = "u"
[[watch]]
path = %q
target = "t"
settle = "1h"
after = "keep"
`, filepath.Join(dir, "state"), drop)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(bin, "run", "-c", conf)
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			poll(t, 15*time.Second, "the watcher's inotify instance", func() bool { return hasInotify(cmd.Process.Pid) })
			if code := exitsWithin(t, cmd, sig, time.Second, &stderr); code != 0 {
				t.Errorf("exit status %d after %v, want 0 (a clean stop); stderr:\n%s", code, sig, &stderr)
			}
		})
	}
}

// TestCheckConnectStops: SIGTERM stops `check -connect` within a second
// while it waits on a server that never answers, with exit status 1.
func TestCheckConnectStops(t *testing.T) {
	if testing.Short() {
		t.Skip("builds dropship")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("needs the OpenSSH client")
	}
	bin := buildDropship(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent: no SSH banner ever
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	dir := t.TempDir()
	conf := filepath.Join(dir, "agent.toml")
	src := fmt.Sprintf(`[agent]
state_dir = %q
[[target]]
name = "t"
host = "127.0.0.1"
port = %d
user = "u"
connect_timeout = "1m"
`, filepath.Join(dir, "state"), ln.Addr().(*net.TCPAddr).Port)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "check", "-c", conf, "-connect")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("check -connect never connected; stderr:\n%s", &stderr)
	}
	if code := exitsWithin(t, cmd, syscall.SIGTERM, time.Second, &stderr); code != 1 {
		t.Errorf("exit status %d, want 1 (did not finish); stderr:\n%s", code, &stderr)
	}
}
