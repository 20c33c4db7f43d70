package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sshdtest"
)

const (
	agentName  = "bench"
	targetName = "loopback"
	cipher     = "aes128-gcm@openssh.com"
)

// world is one benchmark run: a real sshd, the dropship binary and a running
// agent, and every folder, all below one temporary folder on the same file
// system.
type world struct {
	t    *testing.T
	srv  *sshdtest.Server
	port int    // the port every client dials: sshd's, or the WAN benchmark's proxy in front of it
	bin  string // the dropship binary

	dir     string // everything below lives here
	data    string // source files for the baselines and for hard links
	stage   string // where drops are prepared (same file system as watch)
	watch   string // the agent's watch folder
	remote  string // the agent's remote_dir (sshd writes it)
	scratch string // remote folders of the baselines
	state   string
	cfg     string
	kh      string // known_hosts for every client

	agent  *agentProc
	events *recorder
}

// remoteEnv names a folder in which the remote folders are made instead of
// next to the drop folder: DROPSHIP_BENCH_REMOTE=/dev/shm puts them on tmpfs.
const remoteEnv = "DROPSHIP_BENCH_REMOTE"

// newWorld builds dropship, starts sshd and prepares the folders and the
// agent's configuration; it does not start the agent.
func newWorld(t *testing.T) *world { return newWorldVia(t, nil) }

// newWorldVia is newWorld with something in front of sshd: front, if not
// nil, is called once sshd runs and returns the loopback port the agent and
// every baseline dial instead of sshd's (the WAN benchmark's proxy).
func newWorldVia(t *testing.T, front func(srv *sshdtest.Server) int) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir()}
	w.checkLeaks()
	w.srv = sshdtest.Start(t, sshdtest.Options{MaxSessions: 64})
	w.port = w.srv.Port
	if front != nil {
		w.port = front(w.srv)
	}
	w.data = w.mkdir("data")
	w.stage = w.mkdir("stage")
	w.watch = w.mkdir("drop")
	w.remote = w.mkdir("remote")
	w.scratch = w.mkdir("remote-baselines")
	if base := os.Getenv(remoteEnv); base != "" {
		// The remote folders on another file system (say tmpfs, to take
		// the remote disk out of the comparison with 'cat > /dev/null').
		dir, err := os.MkdirTemp(base, "dropship-bench-remote-")
		if err != nil {
			t.Fatalf("%s=%s: %v", remoteEnv, base, err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		w.remote, w.scratch = filepath.Join(dir, "remote"), filepath.Join(dir, "remote-baselines")
		for _, d := range []string{w.remote, w.scratch} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.state = filepath.Join(w.dir, "state")
	w.kh = filepath.Join(w.dir, "known_hosts")
	w.writeKnownHosts()
	w.bin = filepath.Join(w.dir, "dropship")
	w.build()
	w.cfg = filepath.Join(w.dir, "agent.toml")
	w.writeConfig()
	return w
}

func (w *world) mkdir(name string) string {
	w.t.Helper()
	p := filepath.Join(w.dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// binEnv names a dropship binary to measure instead of building one from
// the working tree (say, one built from another commit).
const binEnv = "DROPSHIP_BENCH_BIN"

// build compiles dropship as `make build` does, but keeps the symbol table
// so that perf can name functions. With DROPSHIP_BENCH_BIN it copies that
// binary instead.
func (w *world) build() {
	w.t.Helper()
	if p := os.Getenv(binEnv); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			w.t.Fatalf("%s: %v", binEnv, err)
		}
		if err := os.WriteFile(w.bin, b, 0o755); err != nil {
			w.t.Fatal(err)
		}
		return
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		w.t.Fatalf("the go tool is needed to build dropship: %v", err)
	}
	cmd := exec.Command(goTool, "build", "-trimpath", "-o", w.bin, "github.com/dropship/dropship/cmd/dropship")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		w.t.Fatalf("build dropship: %v\n%s", err, out)
	}
}

// describeBinary says which dropship is measured.
func (w *world) describeBinary() string {
	if p := os.Getenv(binEnv); p != "" {
		out, _ := exec.Command(w.bin, "version").CombinedOutput()
		return fmt.Sprintf("dropship from %s=%s (version %q)", binEnv, p, strings.TrimSpace(string(out)))
	}
	desc := "unknown"
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		desc = strings.TrimSpace(string(out))
	}
	return fmt.Sprintf("dropship %s built with %s", desc, runtime.Version())
}

// writeKnownHosts writes the known_hosts file of every client: sshd's host
// key under the address the clients dial, [127.0.0.1]:port.
func (w *world) writeKnownHosts() {
	w.t.Helper()
	line := w.srv.KnownHostsLine
	if w.port != w.srv.Port {
		var err error
		if line, err = knownHostsFor(line, w.srv.Port, w.port); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := os.WriteFile(w.kh, []byte(line+"\n"), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

// knownHostsFor turns sshd's known_hosts line "[127.0.0.1]:from key" into
// the same key for port to.
func knownHostsFor(line string, from, to int) (string, error) {
	prefix := fmt.Sprintf("[127.0.0.1]:%d ", from)
	if !strings.HasPrefix(line, prefix) {
		return "", fmt.Errorf("sshd's known_hosts line %q does not start with %q", line, prefix)
	}
	return fmt.Sprintf("[127.0.0.1]:%d %s", to, strings.TrimPrefix(line, prefix)), nil
}

// writeConfig writes the agent's configuration: defaults everywhere except
// where the benchmark must say where things are, and the cipher.
func (w *world) writeConfig() {
	w.t.Helper()
	q := strconv.Quote
	cfg := fmt.Sprintf(`[agent]
name = %s
state_dir = %s

[nats]
url = ""
embedded_listen = "127.0.0.1:0"

[[target]]
name = %s
host = %s
port = %d
user = %s
identity_file = %s
host_key = "strict"
known_hosts_file = %s
remote_dir = %s
ssh_options = [%s]

[[watch]]
path = %s
target = %s
`, q(agentName), q(w.state), q(targetName), q(w.srv.Host), w.port, q(w.srv.User), q(w.srv.ClientKey),
		q(w.kh), q(w.remote), q("Ciphers="+cipher), q(w.watch), q(targetName))
	if err := os.WriteFile(w.cfg, []byte(cfg), 0o600); err != nil {
		w.t.Fatal(err)
	}
}

// checkLeaks registers, first, a cleanup that runs last: after the agent,
// the baselines and sshd were stopped, no process may be left whose command
// line names this run's folders.
func (w *world) checkLeaks() {
	w.t.Cleanup(func() {
		var left []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			left = processesMentioning(w.dir)
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, p := range left {
			w.t.Errorf("process left running after the benchmark: %s", p)
		}
	})
}

// processesMentioning lists "pid: cmdline" of every process whose command
// line contains s.
func processesMentioning(s string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(s)) {
			continue
		}
		if st, err := readStat(pid); err == nil && st.state == "Z" {
			continue
		}
		out = append(out, fmt.Sprintf("%d: %s", pid, strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " ")))
	}
	return out
}

// --- the agent -------------------------------------------------------------

// agentProc is a running `dropship run`.
type agentProc struct {
	cmd  *exec.Cmd
	log  string // its output
	done chan struct{}
	err  error
}

// startAgent runs the agent and waits until it started and its embedded NATS
// server's URL is known; it connects the event recorder.
func (w *world) startAgent() {
	w.t.Helper()
	logPath := filepath.Join(w.dir, "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		w.t.Fatal(err)
	}
	defer logf.Close()
	a := &agentProc{log: logPath, done: make(chan struct{})}
	a.cmd = exec.Command(w.bin, "run", "-c", w.cfg)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		w.t.Fatalf("start the agent: %v", err)
	}
	go func() {
		a.err = a.cmd.Wait()
		close(a.done)
	}()
	w.agent = a
	w.t.Cleanup(func() { a.stop(w.t) })
	w.poll(30*time.Second, "the agent to start", func() bool {
		select {
		case <-a.done:
			w.t.Fatalf("the agent exited (%v):\n%s", a.err, a.output())
		default:
		}
		return strings.Contains(a.output(), "agent started")
	})
	var url string
	w.poll(10*time.Second, "the agent's NATS URL in state_dir/nats.url", func() bool {
		b, err := os.ReadFile(filepath.Join(w.state, "nats.url"))
		url = strings.TrimSpace(string(b))
		return err == nil && url != ""
	})
	w.events = record(w.t, url)
}

// restartAgent stops the agent and starts it again from an empty state_dir
// (no journal, a new embedded NATS server), with nothing left in the watch
// folder or the remote folder: after a measurement that timed out, the next
// one must not share the agent with the files still queued.
func (w *world) restartAgent() {
	w.t.Helper()
	if w.agent != nil {
		w.agent.stop(w.t)
	}
	for _, dir := range []string{w.watch, w.remote} {
		if err := emptyDir(dir); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := os.RemoveAll(w.state); err != nil {
		w.t.Fatal(err)
	}
	w.startAgent()
}

func (a *agentProc) pid() int { return a.cmd.Process.Pid }

func (a *agentProc) output() string {
	b, _ := os.ReadFile(a.log)
	return string(b)
}

// stop sends SIGTERM, waits, and kills the process group if it hangs.
func (a *agentProc) stop(t *testing.T) {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(40 * time.Second):
		t.Errorf("the agent did not stop within 40s of SIGTERM; killing it")
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
	}
}

// --- polling ---------------------------------------------------------------

// poll checks cond every 10ms until it holds; it fails the benchmark when
// timeout passes first.
func (w *world) poll(timeout time.Duration, what string, cond func() bool) {
	w.t.Helper()
	if err := pollEvery(10*time.Millisecond, timeout, cond); err != nil {
		w.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// pollEvery checks cond every interval until it holds or timeout passes.
func pollEvery(interval, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", timeout)
		}
		time.Sleep(interval)
	}
	return nil
}

// --- OpenSSH baselines ---------------------------------------------------

// sshOptions are the options every baseline client gets: the same key,
// host-key policy and cipher as dropship's target, no shared connection,
// and no GSSAPI attempt (dropship's PreferredAuthentications skips it too).
func (w *world) sshOptions() []string {
	return append([]string{"-o", "ControlMaster=no", "-o", "ControlPath=none"}, w.baseOptions()...)
}

// muxOptions are sshOptions for a client of the shared connection at sock.
func (w *world) muxOptions(sock string) []string {
	return append([]string{"-o", "ControlMaster=no", "-o", "ControlPath=" + sock}, w.baseOptions()...)
}

func (w *world) baseOptions() []string {
	return []string{
		"-i", w.srv.ClientKey,
		"-o", "IdentitiesOnly=yes",
		"-o", "PreferredAuthentications=publickey",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + w.kh,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "Ciphers=" + cipher,
	}
}

// startMaster starts `ssh -M -N`, a shared connection like the one dropship
// keeps per target, and returns its socket and its pid (the master, not the
// clients, does the encryption of every session). It is stopped by the
// test's cleanup.
func (w *world) startMaster() (sock string, pid int) {
	w.t.Helper()
	sock = filepath.Join(w.dir, "mux.sock")
	args := append([]string{"-p", strconv.Itoa(w.port), "-M", "-N", "-S", sock, "-o", "ControlPersist=no"}, w.baseOptions()...)
	cmd := exec.Command("ssh", append(args, "--", w.login())...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	w.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	w.poll(30*time.Second, "the ssh master's socket", func() bool {
		select {
		case <-done:
			w.t.Fatalf("ssh -M exited: %s", out.String())
		default:
		}
		fi, err := os.Stat(sock)
		return err == nil && fi.Mode()&os.ModeSocket != 0
	})
	return sock, cmd.Process.Pid
}

// sftpCmd is `sftp -b - host`, reading its commands from stdin, over the
// shared connection at control if it is not "".
func (w *world) sftpCmd(ctx context.Context, control string) *exec.Cmd {
	opts := w.sshOptions()
	if control != "" {
		opts = w.muxOptions(control)
	}
	args := append([]string{"-q", "-P", strconv.Itoa(w.port)}, opts...)
	args = append(args, "-b", "-", "--", w.login())
	return exec.CommandContext(ctx, "sftp", args...)
}

// login is user@host for ssh; remote(p) is user@host:p for scp.
func (w *world) login() string { return w.srv.User + "@" + w.srv.Host }

func (w *world) remoteSpec(p string) string { return w.login() + ":" + p }

// sshCmd is `ssh … host command`.
func (w *world) sshCmd(ctx context.Context, command string) *exec.Cmd {
	args := append([]string{"-p", strconv.Itoa(w.port)}, w.sshOptions()...)
	args = append(args, "--", w.login(), command)
	return exec.CommandContext(ctx, "ssh", args...)
}

// scpCmd is `scp -q … files… host:dir/` in the default (SFTP) mode.
func (w *world) scpCmd(ctx context.Context, dir string, files []string, remoteDir string) *exec.Cmd {
	args := append([]string{"-q", "-P", strconv.Itoa(w.port)}, w.sshOptions()...)
	args = append(args, "--")
	args = append(args, files...)
	args = append(args, w.remoteSpec(remoteDir+"/"))
	cmd := exec.CommandContext(ctx, "scp", args...)
	cmd.Dir = dir
	return cmd
}

// run is the outcome of one timed client run.
type run struct {
	wall time.Duration
	cpu  time.Duration // user+system of the process and the children it waited for
}

// timed runs cmd to its end and returns its wall time and CPU time (from
// wait4's rusage, which includes the children it reaped: scp's ssh).
func timed(cmd *exec.Cmd) (run, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := run{wall: time.Since(start)}
	if cmd.ProcessState != nil {
		r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return r, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out.String())
	}
	return r, nil
}

// tarPipe runs `tar c -C dir names… | ssh host 'tar x -C remoteDir'`.
func (w *world) tarPipe(ctx context.Context, dir string, names []string, remoteDir string) (run, error) {
	tarc := exec.CommandContext(ctx, "tar", append([]string{"c", "-C", dir, "--"}, names...)...)
	ssh := w.sshCmd(ctx, "tar x -C "+shellQuote(remoteDir))
	pr, pw, err := os.Pipe()
	if err != nil {
		return run{}, err
	}
	var tarErr, sshErr bytes.Buffer
	tarc.Stdout, tarc.Stderr = pw, &tarErr
	ssh.Stdin, ssh.Stdout, ssh.Stderr = pr, &sshErr, &sshErr
	for _, c := range []*exec.Cmd{tarc, ssh} {
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		c.WaitDelay = 5 * time.Second
	}
	start := time.Now()
	if err := tarc.Start(); err != nil {
		pr.Close()
		pw.Close()
		return run{}, err
	}
	if err := ssh.Start(); err != nil {
		pr.Close()
		pw.Close()
		_ = tarc.Process.Kill()
		_ = tarc.Wait()
		return run{}, err
	}
	pr.Close()
	pw.Close()
	errT := tarc.Wait()
	errS := ssh.Wait()
	r := run{wall: time.Since(start)}
	for _, c := range []*exec.Cmd{tarc, ssh} {
		if c.ProcessState != nil {
			r.cpu += c.ProcessState.UserTime() + c.ProcessState.SystemTime()
		}
	}
	if errT != nil || errS != nil {
		return r, fmt.Errorf("tar | ssh tar: tar: %v %s; ssh: %v %s", errT, tarErr.String(), errS, sshErr.String())
	}
	return r, nil
}

// shellQuote quotes s for the remote shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// --- /proc ---------------------------------------------------------------

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procStat is what the benchmark reads from /proc/<pid>/stat.
type procStat struct {
	state          string
	ppid           int
	utime, stime   time.Duration // the process itself, all threads
	cutime, cstime time.Duration // children it waited for
	start          uint64        // start time in ticks since boot: with pid, names a process
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, starttime field 22.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	num := func(k int) uint64 { n, _ := strconv.ParseUint(f[k-3], 10, 64); return n }
	ticks := func(k int) time.Duration { return time.Duration(num(k)) * clockTick }
	return procStat{
		state:  f[0],
		ppid:   int(num(4)),
		utime:  ticks(14),
		stime:  ticks(15),
		cutime: ticks(16),
		cstime: ticks(17),
		start:  num(22),
	}, nil
}

// memory is VmRSS and VmHWM (peak RSS) of pid, in bytes.
func memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return rss, hwm, nil
}

// procKey names one process: a recycled pid is another process.
type procKey struct {
	pid   int
	start uint64
}

// cpuSnap is the CPU time of a process and of its descendants at one moment.
type cpuSnap struct {
	self   time.Duration             // the process itself
	reaped time.Duration             // children it waited for (cutime+cstime)
	live   map[procKey]time.Duration // each live descendant: its own time plus the children it reaped
}

// snapCPU reads pid and all its descendants from /proc.
func snapCPU(pid int) (cpuSnap, error) {
	st, err := readStat(pid)
	if err != nil {
		return cpuSnap{}, err
	}
	s := cpuSnap{self: st.utime + st.stime, reaped: st.cutime + st.cstime, live: map[procKey]time.Duration{}}
	children := map[int][]int{}
	stats := map[int]procStat{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ps, err := readStat(p)
		if err != nil {
			continue
		}
		stats[p] = ps
		children[ps.ppid] = append(children[ps.ppid], p)
	}
	queue := append([]int(nil), children[pid]...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		ps := stats[p]
		s.live[procKey{p, ps.start}] = ps.utime + ps.stime + ps.cutime + ps.cstime
		queue = append(queue, children[p]...)
	}
	return s, nil
}

// cpuBetween is the CPU time the process spent between two snapshots, and
// the CPU time its descendants spent: those that ended and were reaped count
// through the parent's cutime, those alive through their own counters (a
// descendant alive at a and gone at b counts through its parent's cutime,
// less what it had used by a).
func cpuBetween(a, b cpuSnap) (self, children time.Duration) {
	self = b.self - a.self
	children = b.reaped - a.reaped
	for _, v := range b.live {
		children += v
	}
	for _, v := range a.live {
		children -= v
	}
	return self, children
}

// --- files -----------------------------------------------------------------

// writeRandom writes size bytes of pseudo-random data (incompressible, so
// no tool gains from compression) to p.
func writeRandom(p string, size int64, seed uint64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), 'd', 'r', 'o', 'p'})
	if _, err := io.CopyN(f, rng, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// copyFile copies src to a new file dst (in the kernel, with
// copy_file_range, where the file system allows).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// randomBytes returns n pseudo-random bytes derived from seed.
func randomBytes(n int, seed uint64) []byte {
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), 'b', 'y', 't', 'e'})
	b := make([]byte, n)
	_, _ = rng.Read(b)
	return b
}

// listNames reads the names in dir (nil if it cannot be read).
func listNames(dir string) []string {
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	return names
}

// countPresent counts how many of want are in dir.
func countPresent(dir string, want map[string]bool) int {
	n := 0
	for _, name := range listNames(dir) {
		if want[name] {
			n++
		}
	}
	return n
}

// emptyDir removes everything inside dir, leaving dir.
func emptyDir(dir string) error {
	var errs []error
	for _, name := range listNames(dir) {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, name)))
	}
	return errors.Join(errs...)
}

// --- events ------------------------------------------------------------------

// lifecycle is one transfer lifecycle event as the recorder saw it.
type lifecycle struct {
	received time.Time
	id       string // the event id
	state    events.TransferState
	created  time.Time // the envelope's time
	data     events.Transfer
}

// recorder keeps every transfer lifecycle event of the agent, from a core
// NATS subscription (so a republished event shows up twice with one id).
type recorder struct {
	mu  sync.Mutex
	got []lifecycle
	bad []string
}

func record(t *testing.T, url string) *recorder {
	t.Helper()
	r := &recorder{}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to the agent's NATS at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.Subscribe("dropship."+agentName+".*.transfer.>", func(m *nats.Msg) {
		now := time.Now()
		ev, err := events.ParseMsg(m)
		var d events.Transfer
		if err == nil {
			d, err = ev.Transfer()
		}
		st, _ := ev.TransferState()
		r.mu.Lock()
		defer r.mu.Unlock()
		if err != nil {
			r.bad = append(r.bad, fmt.Sprintf("%s: %v", m.Subject, err))
			return
		}
		r.got = append(r.got, lifecycle{received: now, id: ev.ID, state: st, created: ev.Time, data: d})
	})
	if err != nil {
		t.Fatalf("subscribe to the agent's events: %v", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, b := range r.bad {
			t.Errorf("an event the benchmark could not read: %s", b)
		}
	})
	return r
}

// since returns the events received from mark on (mark from len()).
func (r *recorder) since(mark int) []lifecycle {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]lifecycle(nil), r.got[mark:]...)
}

// mark is a position in the recorder, for since.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// completedPaths counts, among evs, distinct local paths with a completed
// event whose path is in want.
func completedPaths(evs []lifecycle, want map[string]bool) int {
	seen := map[string]bool{}
	for _, e := range evs {
		if e.state == events.TransferCompleted && want[e.data.LocalPath] {
			seen[e.data.LocalPath] = true
		}
	}
	return len(seen)
}

// syncBuffer is a bytes.Buffer safe for a writing process and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// arrivals watches a folder with inotify for a set of names to appear (as
// an atomic rename into place or a creation). Waiting this way costs no CPU,
// unlike polling a folder of a thousand names, which on two cores would take
// time from the agent being measured.
type arrivals struct {
	w    *fsnotify.Watcher
	dir  string
	want map[string]bool
	done chan struct{} // closed when the last name arrived, or on overflow
	last time.Time
	lost bool // the kernel queue overflowed: fall back to polling
	quit chan struct{}
	wg   sync.WaitGroup
}

// watchArrivals starts watching dir for the names in want; call it before
// anything can arrive.
func watchArrivals(dir string, want map[string]bool) (*arrivals, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, err
	}
	a := &arrivals{w: w, dir: dir, want: want, done: make(chan struct{}), quit: make(chan struct{})}
	a.wg.Add(1)
	go a.loop()
	return a, nil
}

func (a *arrivals) loop() {
	defer a.wg.Done()
	seen := map[string]bool{}
	for {
		select {
		case <-a.quit:
			return
		case ev, ok := <-a.w.Events:
			if !ok {
				return
			}
			name := filepath.Base(ev.Name)
			if !ev.Has(fsnotify.Create) || !a.want[name] || seen[name] {
				continue
			}
			seen[name] = true
			if len(seen) == len(a.want) {
				a.last = time.Now()
				close(a.done)
				return
			}
		case err, ok := <-a.w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				a.lost = true
				close(a.done)
				return
			}
		}
	}
}

// wait returns when the last name arrived, and stops watching.
func (a *arrivals) wait(timeout time.Duration) (time.Time, error) {
	defer a.close()
	select {
	case <-a.done:
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("not all arrived after %s", timeout)
	}
	if !a.lost {
		return a.last, nil
	}
	err := pollEvery(10*time.Millisecond, timeout, func() bool { return countPresent(a.dir, a.want) == len(a.want) })
	return time.Now(), err
}

func (a *arrivals) close() {
	close(a.quit)
	a.w.Close()
	a.wg.Wait()
}
