// Package natsbin runs a nats-server program (Debian's own, by default) for
// tests that must prove dropship works with the NATS server an operator
// installs from the distribution, not only with the one compiled into it.
package natsbin

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RequireEnv turns "nats-server is not installed" from a skip into a test
// failure; CI sets it to 1 (the same switch as for sshd).
const RequireEnv = "DROPSHIP_REQUIRE_SSHD"

// BinaryEnv names a nats-server program to use instead of the installed one.
const BinaryEnv = "DROPSHIP_NATS_SERVER"

// Server is a running nats-server process with JetStream on 127.0.0.1.
type Server struct {
	URL     string
	Version string // as `nats-server --version` prints it, e.g. "2.9.10"
	cmd     *exec.Cmd
	done    chan struct{}
}

// Find returns the path of the nats-server program and its version. When
// it is not installed (`apt-get install nats-server`) it skips the test, or
// fails it when DROPSHIP_REQUIRE_SSHD=1.
func Find(t testing.TB) (path, version string) {
	t.Helper()
	path = os.Getenv(BinaryEnv)
	if path == "" {
		if p, err := exec.LookPath("nats-server"); err == nil {
			path = p
		}
	}
	for _, p := range []string{"/usr/sbin/nats-server", "/usr/bin/nats-server"} {
		if path != "" {
			break
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			path = p
		}
	}
	if path == "" {
		msg := "nats-server not installed (apt-get install nats-server gives Debian's)"
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s, and %s=1 forbids skipping", msg, RequireEnv)
		}
		t.Skip(msg)
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", path, err, out)
	}
	m := regexp.MustCompile(`v?(\d+\.\d+\.\d+\S*)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("%s --version printed no version: %s", path, out)
	}
	return path, m[1]
}

// Start runs nats-server with JetStream (store in a temporary folder) on a
// free loopback port, waits until it accepts clients, and stops it when the
// test ends. jetStream false starts it without JetStream.
func Start(t testing.TB, jetStream bool) *Server {
	t.Helper()
	path, version := Find(t)
	dir := t.TempDir()
	port := freePort(t)
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-l", filepath.Join(dir, "nats.log")}
	if jetStream {
		args = append(args, "-js", "-sd", filepath.Join(dir, "store"))
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	s := &Server{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Version: version, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "nats.log"))
			t.Logf("log of %s %s:\n%s", path, version, b)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !ready(port, jetStream) {
		select {
		case <-s.done:
			b, _ := os.ReadFile(filepath.Join(dir, "nats.log"))
			t.Fatalf("%s exited before accepting clients:\n%s", path, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready on port %d after 15s", path, port)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// ready says whether the server sends its INFO line (with JetStream on, when
// asked for).
func ready(port int, jetStream bool) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		return false
	}
	return !jetStream || strings.Contains(line, `"jetstream":true`)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
