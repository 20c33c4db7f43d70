package main

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/config"
)

// devRun is `dropship run -dev` running as a process of its own group.
type devRun struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{} // closed when it exited
	err            error         // of Wait, once done
}

func startDevRun(t *testing.T, dir string, env []string, argv ...string) *devRun {
	t.Helper()
	r := &devRun{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(argv[0], argv[1:]...)
	r.cmd.Dir, r.cmd.Env = dir, env
	r.cmd.Stdout, r.cmd.Stderr = r.stdout, r.stderr
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // go run's child too gets the Ctrl-C
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	})
	poll(t, 2*time.Minute, "run -dev to say what to do next and start its agent", func() bool {
		select {
		case <-r.done:
			t.Fatalf("run -dev exited: %v\n%s\n%s", r.err, r.stdout, r.stderr)
		default:
		}
		return strings.Contains(r.stdout.String(), "Stop: Ctrl-C") && strings.Contains(r.stderr.String(), `msg="agent started"`)
	})
	return r
}

// stop sends Ctrl-C to the process group and wants exit status 0 (go run
// exits 1 after a signal, whatever its child did: then only a graceful stop).
func (r *devRun) stop(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-r.done:
		var ee *exec.ExitError
		goRun := filepath.Base(r.cmd.Path) == "go" && errors.As(r.err, &ee) && ee.ExitCode() == 1
		if goRun && !strings.Contains(r.stderr.String(), `msg="stopping: no new transfers`) {
			t.Errorf("run -dev under go run did not stop gracefully after Ctrl-C:\n%s", r.stderr)
		}
		if r.err != nil && !goRun {
			t.Errorf("run -dev after Ctrl-C: %v\n%s", r.err, r.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run -dev still running 30s after Ctrl-C")
	}
}

// commands returns the lines printed under "In another terminal:".
func (r *devRun) commands(t *testing.T) []string {
	t.Helper()
	_, rest, ok := strings.Cut(r.stdout.String(), "In another terminal:\n")
	if !ok {
		t.Fatalf("run -dev printed no commands:\n%s", r.stdout)
	}
	var cmds []string
	for l := range strings.Lines(rest) {
		if l = strings.TrimSpace(l); l == "" {
			break
		}
		cmds = append(cmds, l)
	}
	return cmds
}

// printed returns the printed command that contains word.
func printed(t *testing.T, cmds []string, word string) string {
	t.Helper()
	for _, c := range cmds {
		if strings.Contains(c, word) {
			return c
		}
	}
	t.Fatalf("no printed command with %q in %q", word, cmds)
	return ""
}

// holdPort4222 makes sure that 127.0.0.1:4222 is taken while the test runs:
// by the test itself, unless something else already has it.
func holdPort4222(t *testing.T) {
	t.Helper()
	if l, err := net.Listen("tcp", "127.0.0.1:4222"); err == nil {
		t.Cleanup(func() { l.Close() })
	}
}

// shell runs a printed command line as a user would paste it, in dir.
func shell(t *testing.T, dir string, env []string, line string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run -dev writes the configuration it runs to dropship-dev/agent.toml,
// takes a free NATS port when 4222 is taken, and prints commands that work
// when pasted as printed: with the binary's path when it is not on PATH.
func TestDevPrintsCommandsThatWork(t *testing.T) {
	bin := buildDropship(t)
	holdPort4222(t)
	dir := t.TempDir()
	env := append(os.Environ(), "NO_COLOR=1")
	r := startDevRun(t, dir, env, bin, "run", "-dev")

	file := filepath.Join(dir, "dropship-dev", "agent.toml")
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatalf("the configuration run -dev wrote: %v", err)
	}
	if cfg.NATS.EmbeddedListen == "127.0.0.1:4222" || cfg.NATS.URL != "" {
		t.Errorf("run -dev runs NATS on %q with 4222 taken", cfg.NATS.EmbeddedListen)
	}
	if len(cfg.Targets) != 1 || len(cfg.Watches) != 1 || len(cfg.Sources) != 1 || !strings.HasPrefix(cfg.Targets[0].HostKey, "SHA256:") {
		t.Errorf("the -dev configuration has targets %+v, watches %+v", cfg.Targets, cfg.Watches)
	}
	for _, want := range []string{file, "nats://" + cfg.NATS.EmbeddedListen, "127.0.0.1:4222 is taken"} {
		if !strings.Contains(r.stdout.String(), want) {
			t.Errorf("run -dev does not say %q:\n%s", want, r.stdout)
		}
	}
	cmds := r.commands(t)
	for _, c := range cmds {
		if strings.HasPrefix(c, "echo ") || strings.HasPrefix(c, "nats ") {
			continue
		}
		if !strings.HasPrefix(c, bin+" ") {
			t.Errorf("printed %q: want it to start with the binary's path %s (it is not on PATH)", c, bin)
		}
	}

	// As a user would: watch the events, drop the file, ask for the status.
	events := exec.Command("sh", "-c", "exec "+printed(t, cmds, " events "))
	events.Dir, events.Env = dir, env
	evOut, evErr := &syncBuffer{}, &syncBuffer{}
	events.Stdout, events.Stderr = evOut, evErr
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = events.Process.Kill(); _ = events.Wait() })
	poll(t, 30*time.Second, "the printed events command to start showing", func() bool {
		return strings.Contains(evErr.String(), "showing")
	})
	if out, err := shell(t, dir, env, printed(t, cmds, "echo hello")); err != nil {
		t.Fatalf("the printed echo: %v\n%s", err, out)
	}
	poll(t, 60*time.Second, "the printed events command to show hello.txt completed", func() bool {
		return strings.Contains(evOut.String(), "completed") && strings.Contains(evOut.String(), "hello.txt")
	})
	if b, err := os.ReadFile(filepath.Join(dir, "dropship-dev", "remote", "hello.txt")); err != nil || string(b) != "hello\n" {
		t.Errorf("remote hello.txt: %q, %v", b, err)
	}
	// The relay: a file put in the partner's outbox is fetched, sent and
	// deleted from the outbox.
	if out, err := shell(t, dir, env, printed(t, cmds, "echo relayed")); err != nil {
		t.Fatalf("the printed echo: %v\n%s", err, out)
	}
	poll(t, 60*time.Second, "relayed.txt at the target and gone from the outbox", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "dropship-dev", "remote", "relayed.txt"))
		_, gone := os.Stat(filepath.Join(dir, "dropship-dev", "partner-outbox", "relayed.txt"))
		return err == nil && string(b) == "relayed\n" && os.IsNotExist(gone)
	})
	if out, err := shell(t, dir, env, printed(t, cmds, " status ")); err != nil || !strings.Contains(out, "TARGET") {
		t.Errorf("the printed status command: %v\n%s", err, out)
	}
	if out, err := shell(t, dir, env, printed(t, cmds, " check ")); err != nil || !strings.Contains(out, ": ok") {
		t.Errorf("the printed check command: %v\n%s", err, out)
	}
	if c := printed(t, cmds, "nats sub"); !strings.Contains(c, "-s nats://"+cfg.NATS.EmbeddedListen+" ") {
		t.Errorf("printed %q: want the NATS address", c)
	}
	r.stop(t)
}

// On PATH, the printed commands say just "dropship"; under go run, "go run"
// with the package's path from where it was started.
func TestDevPrintsHowItWasStarted(t *testing.T) {
	holdPort4222(t)
	bin := buildDropship(t)
	env := append(os.Environ(), "NO_COLOR=1", "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	r := startDevRun(t, t.TempDir(), env, bin, "run", "-dev")
	if c := printed(t, r.commands(t), " status "); !strings.HasPrefix(c, "dropship status -c ") {
		t.Errorf("on PATH, printed %q", c)
	}
	r.stop(t)

	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	cwd, err := os.Getwd() // cmd/dropship
	if err != nil {
		t.Fatal(err)
	}
	devDir := t.TempDir()
	r = startDevRun(t, cwd, append(os.Environ(), "NO_COLOR=1"), goTool, "run", ".", "run", "-dev", "-dev-dir", devDir)
	c := printed(t, r.commands(t), " status ")
	if !strings.HasPrefix(c, "go run . status -c ") {
		t.Errorf("under go run from cmd/dropship, printed %q", c)
	}
	if out, err := shell(t, cwd, os.Environ(), c); err != nil || !strings.Contains(out, "TARGET") {
		t.Errorf("the printed status command %q: %v\n%s", c, err, out)
	}
	r.stop(t)
}

func TestSelfCommand(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module github.com/dropship/dropship\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "cmd", "dropship")
	other := filepath.Join(root, "docs")
	for _, d := range []string{sub, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	installed := filepath.Join(t.TempDir(), "dropship")
	if err := os.WriteFile(installed, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	onPath := func(string) (string, error) { return installed, nil }
	notOnPath := func(string) (string, error) { return "", fs.ErrNotExist }
	goRun := "/tmp/go-build1234567/b001/exe/dropship"
	goRunCached := "/root/.cache/go-build/98/98946283d00b619c57e2be6a6b7f69d9c89d4afb86cb45f8d039cbe9c14f67a4-d/dropship"
	for _, tc := range []struct {
		exe, dir string
		look     func(string) (string, error)
		want     string
	}{
		{installed, root, onPath, "dropship"},
		{installed, root, notOnPath, installed},
		{"/opt/my tools/dropship", root, notOnPath, "'/opt/my tools/dropship'"},
		{goRun, root, notOnPath, "go run ./cmd/dropship"},
		{goRun, sub, notOnPath, "go run ."},
		{goRun, other, notOnPath, "go run ../cmd/dropship"},
		{goRun, t.TempDir(), notOnPath, goRun},
		{goRunCached, sub, notOnPath, "go run ."},
		{goRunCached, other, notOnPath, "go run ../cmd/dropship"},
		{"/home/me/bin-d/dropship", root, notOnPath, "/home/me/bin-d/dropship"},
	} {
		if got := selfCommand(tc.exe, tc.dir, tc.look); got != tc.want {
			t.Errorf("selfCommand(%q, %q) = %q, want %q", tc.exe, tc.dir, got, tc.want)
		}
	}
}

func TestDevConfigQuotes(t *testing.T) {
	for in, want := range map[string]string{
		`/srv/drop`:     `"/srv/drop"`,
		`/srv/"q"\x`:    `"/srv/\"q\"\\x"`,
		"/srv/a\tb\x7f": `"/srv/a\u0009b\u007F"`,
	} {
		if got := tomlString(in); got != want {
			t.Errorf("tomlString(%q) = %s, want %s", in, got, want)
		}
	}
	var buf bytes.Buffer
	dir := t.TempDir()
	for _, d := range []string{"drop", "remote", "state"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	buf.WriteString(devConfig(devFiles{
		state: filepath.Join(dir, "state"), drop: filepath.Join(dir, "drop"), remote: filepath.Join(dir, "remote"), outbox: filepath.Join(dir, "outbox"),
		password: filepath.Join(dir, "password"), port: 2222, hostKey: "SHA256:" + strings.Repeat("A", 43), natsListen: "127.0.0.1:4222",
	}))
	file := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(file, buf.Bytes(), 0o640); err != nil {
		t.Fatal(err)
	}
	var problems config.Problems
	if _, err := config.Load(file); errors.As(err, &problems) || err != nil {
		t.Fatalf("the -dev configuration does not load: %v", err)
	}
}
