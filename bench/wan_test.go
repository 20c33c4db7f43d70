package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sshdtest"
)

// The WAN benchmark (issue 11, point 7): the same agent and the same OpenSSH
// baselines as TestBench, but every connection goes through toxiproxy, which
// delays each direction by 25 ms and then by 100 ms.
const (
	wanEnv        = "DROPSHIP_BENCH_WAN"         // set by `make bench-wan`
	wanTimeoutEnv = "DROPSHIP_BENCH_WAN_TIMEOUT" // overrides the per-row timeout, a Go duration

	// Targets, as ratios from the same run.
	wanTargetSets    = 1.0  // (a), (b): dropship ≤ 1.0 × rsync
	wanTargetBig     = 2.0  // (c): dropship's rate ≥ 2 × scp's
	wanTargetLatency = 0.35 // (d): dropship p50 ≤ 0.35 × the inotifywait + scp loop
	wanTargetCPU     = 1.2  // (c): agent + its ssh ≤ 1.2 × scp + its ssh, per GiB, hash included
)

// wanPhase is one latency of the WAN benchmark and what is sampled at it.
type wanPhase struct {
	oneWay  time.Duration // added to each direction: the round trip is twice this
	samples int           // (d) latency samples of each tool
	// Files of (a) and (b) that scp and sftp send; the rest is
	// extrapolated. Both pay a few round trips per file, one file after the
	// other: 1000 files at 100 ms each way would take 10 minutes each.
	serialSmall, serialMedium int
}

// wanParams are the sizes of a run: issue 11's, or a smoke run.
type wanParams struct {
	small, medium int   // files of (a), 4 KiB each, and of (b), 1 MiB each
	big           int64 // the one file of (c)
	phases        []wanPhase
	rowTimeout    time.Duration // one tool's run of one row
}

var (
	wanFull = wanParams{small: 1000, medium: 200, big: 1 << 30, rowTimeout: 5 * time.Minute, phases: []wanPhase{
		{oneWay: 25 * time.Millisecond, samples: 15, serialSmall: 100, serialMedium: 50},
		{oneWay: 100 * time.Millisecond, samples: 8, serialSmall: 40, serialMedium: 20},
	}}
	wanQuick = wanParams{small: 20, medium: 5, big: 8 << 20, rowTimeout: 2 * time.Minute, phases: []wanPhase{
		{oneWay: 25 * time.Millisecond, samples: 3, serialSmall: 20, serialMedium: 5},
		{oneWay: 100 * time.Millisecond, samples: 2, serialSmall: 10, serialMedium: 3},
	}}
)

// wanBench is the state of one TestBenchWAN run. It reuses the loopback
// benchmark's helpers (drops, finish, latency samples) through bench; bench.rep
// is the current phase's table.
type wanBench struct {
	*bench
	wp     wanParams
	proxy  *wanProxy
	small  *fileSet // (a)
	medium *fileSet // (b)
	bigSrc string   // (c)
	phase  wanPhase
	login  time.Duration // this phase's fresh `ssh host true`
	out    *wanReport
}

// TestBenchWAN is `make bench-wan`. It is skipped unless
// DROPSHIP_BENCH_WAN=1. A missed target is reported in the table (and fails
// the test only with DROPSHIP_BENCH_STRICT=1); a tool that does not finish a
// row within the row timeout is shown as timed out.
func TestBenchWAN(t *testing.T) {
	if os.Getenv(wanEnv) != "1" {
		t.Skip("the WAN benchmark runs only with DROPSHIP_BENCH_WAN=1: make bench-wan")
	}
	t.Setenv(sshdtest.RequireEnv, "1")
	for _, tool := range []string{"ssh", "scp", "sftp", "rsync", "tar", "sync", "inotifywait"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (apt-get install openssh-client rsync tar inotify-tools): %v", tool, err)
		}
	}
	quickRun := os.Getenv("DROPSHIP_BENCH_QUICK") == "1"
	wp := wanFull
	if quickRun {
		wp = wanQuick
	}
	if v := os.Getenv(wanTimeoutEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive Go duration such as 5m", wanTimeoutEnv, v)
		}
		wp.rowTimeout = d
	}

	out := &wanReport{started: time.Now()}
	complete := false
	t.Cleanup(func() {
		dir := "results"
		if quickRun {
			dir = t.TempDir() // a smoke run's numbers are not results
		}
		latest := complete && !quickRun
		p, err := out.save(dir, complete, latest)
		if err != nil {
			t.Errorf("save the results: %v", err)
			return
		}
		fmt.Printf("\n%s\n", out.markdown(complete))
		if !quickRun {
			fmt.Printf("saved as bench/%s", p)
			if latest {
				fmt.Printf(" and bench/results/wan-latest.md")
			}
			fmt.Println()
		}
	})

	var proxy *wanProxy
	w := newWorldVia(t, func(srv *sshdtest.Server) int {
		proxy = startWANProxy(t, fmt.Sprintf("127.0.0.1:%d", srv.Port))
		return proxy.port
	})
	wb := &wanBench{bench: &bench{t: t, p: quick, w: w}, wp: wp, proxy: proxy, out: out}
	out.setup = wb.describe()
	wb.prepareData()
	for _, ph := range wp.phases {
		wb.runPhase(ph)
	}
	out.setup = append(out.setup, "load average at the end: "+loadavg())
	complete = true

	var missed int
	for _, ph := range out.phases {
		for _, rw := range ph.rep.failed() {
			missed++
			t.Logf("target missed at %s: (%s) %s: %s against %s, ratio %s, target %s", ph.title, rw.sec, rw.what, rw.value, rw.ref, rw.ratio, rw.target)
		}
	}
	if missed > 0 && os.Getenv("DROPSHIP_BENCH_STRICT") == "1" {
		t.Errorf("%d targets missed (DROPSHIP_BENCH_STRICT=1)", missed)
	}
}

// describe says how and where the WAN benchmark ran.
func (wb *wanBench) describe() []string {
	cmdOut := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "unknown"
		}
		return strings.TrimSpace(string(out))
	}
	cpu := "unknown CPU"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	fsys := strings.Join(strings.Fields(lastLine(cmdOut("df", "--output=source,fstype", wb.w.dir))), " ")
	var lat []string
	for _, ph := range wb.wp.phases {
		lat = append(lat, fmt.Sprintf("%s each way (%s round trip)", ph.oneWay, 2*ph.oneWay))
	}
	return []string{
		fmt.Sprintf("machine: %d cores (%s), Linux %s; sshd, toxiproxy and every client on 127.0.0.1; file system %s (%s)",
			runtime.NumCPU(), cpu, cmdOut("uname", "-r"), fsys, filepath.Dir(wb.w.dir)),
		fmt.Sprintf("network: toxiproxy %s (in the benchmark's process) from 127.0.0.1:%d to sshd on 127.0.0.1:%d, a latency toxic on each direction, jitter 0, at %s; "+
			"no bandwidth limit and no loss, and the delay is added above TCP, so only the round trips the protocols wait for cost time (TCP's slow start plays no part)",
			toxiproxyVersion(), wb.w.port, wb.w.srv.Port, strings.Join(lat, ", then ")),
		fmt.Sprintf("OpenSSH: %s; %s; cipher %s for every tool; key login (ed25519), strict known_hosts", cmdOut("ssh", "-V"), firstLine(cmdOut("rsync", "--version")), cipher),
		fmt.Sprintf("%s; %s; the agent is restarted with an empty state at each latency (and after a row that timed out) and warmed up with one file, so its ssh connection is up before the rows",
			wb.w.describeBinary(), wb.agentSettings()),
		fmt.Sprintf("each tool runs each row once per latency, in this order; a run that takes more than %s is stopped and shown as timed out", wb.wp.rowTimeout),
		"baselines: a fresh ssh login per client run, no ControlMaster (rsync -a -e ssh, tar c | ssh tar x, scp in its default SFTP mode, sftp -b with one put per file, and an inotifywait + scp loop with a login per file)",
		fmt.Sprintf("the machine may be shared: load average at the start %s", loadavg()),
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// toxiproxyVersion is the module version of toxiproxy in this test binary.
func toxiproxyVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/Shopify/toxiproxy/v2" {
				return m.Version
			}
		}
	}
	return "v2"
}

// prepareData writes the files of (a), (b) and (c) under data/.
func (wb *wanBench) prepareData() {
	t := wb.t
	var st syscall.Statfs_t
	if err := syscall.Statfs(wb.w.dir, &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < 3*wb.wp.big+(1<<30) {
		t.Fatalf("only %s free on the file system of %s; the WAN benchmark needs %s", mib(free), wb.w.dir, mib(3*wb.wp.big+(1<<30)))
	}
	wb.bigSrc = filepath.Join(wb.w.data, "big.dat")
	if err := writeRandom(wb.bigSrc, wb.wp.big, 1); err != nil {
		t.Fatal(err)
	}
	mk := func(tag, label string, n int, size int64) *fileSet {
		s := &fileSet{tag: tag, label: label, size: size, dir: filepath.Join(wb.w.data, tag)}
		if err := os.Mkdir(s.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			name := fmt.Sprintf("f%04d.dat", i)
			if err := writeRandom(filepath.Join(s.dir, name), size, uint64(1000+i)); err != nil {
				t.Fatal(err)
			}
			s.names = append(s.names, name)
		}
		return s
	}
	wb.small = mk("s4k", fmt.Sprintf("%d × 4 KiB", wb.wp.small), wb.wp.small, 4<<10)
	wb.medium = mk("s1m", fmt.Sprintf("%d × 1 MiB", wb.wp.medium), wb.wp.medium, 1<<20)
	syscall.Sync()
}

// bigLabel is "1 GiB" or, in a smoke run, the size it has.
func (wb *wanBench) bigLabel() string {
	if wb.wp.big == 1<<30 {
		return "1 GiB"
	}
	return fmt.Sprintf("%d MiB", wb.wp.big>>20)
}

// runPhase measures every row at one latency.
func (wb *wanBench) runPhase(ph wanPhase) {
	t := wb.t
	wb.phase = ph
	rep := &report{started: time.Now()}
	wb.rep = rep
	wb.out.phases = append(wb.out.phases, &wanPhaseReport{
		title: fmt.Sprintf("%s each way (%s round trip)", ph.oneWay, 2*ph.oneWay), rep: rep,
	})
	if err := wb.proxy.setLatency(ph.oneWay); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	wb.logf("the agent restarts; warm-up")
	wb.w.restartAgent()
	wb.warmAgent()
	wb.warmBaselines()
	wb.measureSet(wb.small, "a", ph.serialSmall)
	wb.measureSet(wb.medium, "b", ph.serialMedium)
	wb.measureBig()
	wb.measureLatency()
	wb.out.phases[len(wb.out.phases)-1].intro = fmt.Sprintf(
		"A fresh ssh login (`ssh host true`, median of 3) takes %s here: every baseline run pays one, the agent's connection was made before the rows. This latency took %s to measure.",
		millis(wb.login), secs(time.Since(started).Round(time.Second)))
}

// warmAgent drops one small file into the freshly started agent, so that its
// connection to the target is up before a row is measured.
func (wb *wanBench) warmAgent() {
	warm := filepath.Join(wb.w.data, "warm.dat")
	if _, err := os.Stat(warm); err != nil {
		if err := writeRandom(warm, 4<<10, 7); err != nil {
			wb.t.Fatal(err)
		}
	}
	d := wb.dropFiles(fmt.Sprintf("warm-%d-", time.Now().UnixNano()), []string{warm})
	if err := pollEvery(10*time.Millisecond, 2*time.Minute, func() bool { return countPresent(wb.w.remote, d.remote) == 1 }); err != nil {
		wb.t.Fatalf("the warm-up file did not reach the remote: %v\nagent log tail:\n%s", err, tail(wb.w.agent.output(), 30))
	}
	wb.finish(d)
}

// warmBaselines runs every baseline once at the first latency (sshd's first
// logins, the page cache of the binaries) and times three fresh logins at
// each.
func (wb *wanBench) warmBaselines() {
	t := wb.t
	ctx := context.Background()
	if wb.login > 0 { // sshd and the binaries are warm from the first latency: time the logins only
		wb.login = wb.timeLogins(ctx)
		return
	}
	dir := wb.scratchDir(fmt.Sprintf("warm-%dms", wb.phase.oneWay.Milliseconds()))
	for _, cmd := range []*exec.Cmd{
		wb.w.scpCmd(ctx, wb.w.data, []string{"warm.dat"}, dir),
		wb.w.rsyncCmd(ctx, wb.w.data, []string{"warm.dat"}, dir),
		wb.w.sftpPuts(ctx, wb.w.data, []string{"warm.dat"}, dir),
	} {
		if _, err := timed(cmd); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := wb.w.tarPipe(ctx, wb.w.data, []string{"warm.dat"}, dir); err != nil {
		t.Fatal(err)
	}
	wb.removeAll(dir)
	wb.login = wb.timeLogins(ctx)
}

// timeLogins is the median time of three fresh `ssh host true`.
func (wb *wanBench) timeLogins(ctx context.Context) time.Duration {
	var logins []time.Duration
	for range 3 {
		res, err := timed(wb.w.sshCmd(ctx, "true"))
		if err != nil {
			wb.t.Fatal(err)
		}
		logins = append(logins, res.wall)
	}
	return median(logins)
}

// --- the baselines' commands -------------------------------------------------

// rsyncCmd is `rsync -a -e 'ssh -p PORT …' files… host:dir/`.
func (w *world) rsyncCmd(ctx context.Context, dir string, files []string, remoteDir string) *exec.Cmd {
	shell := append([]string{"ssh", "-p", strconv.Itoa(w.port)}, w.sshOptions()...)
	args := []string{"-a", "-e", rsyncShell(shell), "--"}
	args = append(args, files...)
	args = append(args, w.remoteSpec(remoteDir+"/"))
	cmd := exec.CommandContext(ctx, "rsync", args...)
	cmd.Dir = dir
	return cmd
}

// rsyncShell joins a command for rsync's -e, which splits at spaces and
// keeps quoted spaces (single or double quotes, no backslashes).
func rsyncShell(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		switch {
		case a != "" && !strings.ContainsAny(a, " \t\n'\"\\"):
			out[i] = a
		case !strings.ContainsAny(a, "'\\"):
			out[i] = "'" + a + "'"
		default:
			out[i] = `"` + a + `"` // rsync has no escape for a quote: the caller avoids both kinds
		}
	}
	return strings.Join(out, " ")
}

// sftpPuts is `sftp -b -` with one put per file, from dir to remoteDir, in
// one session (one login).
func (w *world) sftpPuts(ctx context.Context, dir string, files []string, remoteDir string) *exec.Cmd {
	var batch strings.Builder
	for _, f := range files {
		fmt.Fprintf(&batch, "put %s %s\n", sftpQuote(filepath.Join(dir, f)), sftpQuote(filepath.Join(remoteDir, f)))
	}
	cmd := w.sftpCmd(ctx, "")
	cmd.Stdin = strings.NewReader(batch.String())
	return cmd
}

// sftpQuote quotes a path for an sftp batch line.
func sftpQuote(p string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p) + `"`
}

// --- running a row -----------------------------------------------------------

// outcome is one tool's run of one row.
type outcome struct {
	wall     time.Duration
	cpu      time.Duration // user + system, children included
	timedOut bool
	note     string // how the value was obtained, when not plainly
}

// baseline runs a baseline client with the row timeout: f gets the context
// to build its commands with. An error other than the timeout fails the
// benchmark.
func (wb *wanBench) baseline(what string, f func(ctx context.Context) (run, error)) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), wb.wp.rowTimeout)
	defer cancel()
	wb.logf("%s ...", what)
	res, err := f(ctx)
	if ctx.Err() != nil {
		wb.rep.note("**timed out:** %s did not finish within %s and was stopped.", what, wb.wp.rowTimeout)
		wb.logf("%s timed out after %s: %v", what, wb.wp.rowTimeout, err)
		return outcome{timedOut: true}
	}
	if err != nil {
		wb.t.Fatalf("%s: %v", what, err)
	}
	wb.logf("%s: %s", what, secs(res.wall))
	return outcome{wall: res.wall, cpu: res.cpu}
}

// logf prints progress, with the latency and the time since the start.
func (wb *wanBench) logf(format string, args ...any) {
	wb.t.Helper()
	wb.t.Logf("[%s, %s each way] %s", time.Since(wb.out.started).Round(time.Second), wb.phase.oneWay, fmt.Sprintf(format, args...))
}

// serialBaseline runs a client that sends files one after the other (scp,
// sftp) on the first k of s's files, and extrapolates to all of them: the
// login once, the rest in proportion.
func (wb *wanBench) serialBaseline(what string, s *fileSet, k int, cmd func(ctx context.Context, names []string, dir string) *exec.Cmd) outcome {
	k = min(max(k, 1), len(s.names))
	dir := wb.scratchDir(fmt.Sprintf("%s-%s-%dms", s.tag, strings.Fields(what)[0], wb.phase.oneWay.Milliseconds()))
	defer wb.removeAll(dir)
	o := wb.baseline(fmt.Sprintf("%s, %s", s.label, what), func(ctx context.Context) (run, error) {
		return timed(cmd(ctx, s.names[:k], dir))
	})
	if o.timedOut {
		return o
	}
	wb.expectFiles(dir, k, s.size)
	if k < len(s.names) {
		timedWall := o.wall
		o.wall = extrapolate(timedWall, wb.login, k, len(s.names))
		o.note = fmt.Sprintf("%d of %d files timed (%s), extrapolated", k, len(s.names), secs(timedWall))
	}
	return o
}

// extrapolate scales the time of a serial client that sent k files to n
// files: the fixed cost (a login) once, the rest per file.
func extrapolate(took, fixed time.Duration, k, n int) time.Duration {
	if k >= n || k <= 0 {
		return took
	}
	fixed = min(fixed, took)
	return fixed + (took-fixed)*time.Duration(n)/time.Duration(k)
}

// dropshipSet drops every file of s into the running agent at once and
// times until the remote has every final name. On a timeout the agent is
// restarted empty, so that the next row starts clean.
func (wb *wanBench) dropshipSet(s *fileSet) (outcome, stages) {
	t := wb.t
	paths := make([]string, len(s.names))
	for i, n := range s.names {
		paths[i] = filepath.Join(s.dir, n)
	}
	d := wb.stageFiles(fmt.Sprintf("%s-%dms-", s.tag, wb.phase.oneWay.Milliseconds()), paths)
	arr, err := watchArrivals(wb.w.remote, d.remote)
	if err != nil {
		t.Fatal(err)
	}
	wb.logf("%s, dropship ...", s.label)
	wb.release(d)
	last, err := arr.wait(wb.wp.rowTimeout)
	if err != nil {
		wb.logf("%s, dropship: %v", s.label, err)
	} else {
		wb.logf("%s, dropship: %s", s.label, secs(last.Sub(d.at)))
	}
	if err != nil {
		wb.agentTimedOut(fmt.Sprintf("%s, dropship", s.label), countPresent(wb.w.remote, d.remote), len(d.remote))
		return outcome{timedOut: true}, stages{}
	}
	took := last.Sub(d.at)
	if n := countPresent(wb.w.remote, d.remote); n != len(d.remote) {
		t.Fatalf("%s: inotify reported every file on the remote, but %d of %d are there", s.label, n, len(d.remote))
	}
	for name := range d.remote {
		wb.expectFile(filepath.Join(wb.w.remote, name), s.size)
	}
	evs, err := wb.finishWithin(d, wb.wp.rowTimeout)
	if err != nil {
		wb.rep.note("**odd:** %s, dropship: every file arrived in %s, but %v; the agent was restarted.", s.label, secs(took), err)
		wb.w.restartAgent()
		wb.warmAgent()
	}
	return outcome{wall: took}, stagesOf(evs, d)
}

// agentTimedOut records a dropship run that hit the row timeout and
// restarts the agent empty.
func (wb *wanBench) agentTimedOut(what string, got, want int) {
	wb.rep.note("**timed out:** %s had %d of %d files complete on the remote after %s; the agent was restarted with an empty state.",
		what, got, want, wb.wp.rowTimeout)
	wb.w.restartAgent()
	wb.warmAgent()
}

// value formats an outcome's time for the table.
func (wb *wanBench) value(o outcome) string {
	if o.timedOut {
		return fmt.Sprintf("timed out (> %s)", wb.wp.rowTimeout)
	}
	return secs(o.wall)
}

// --- (a) and (b) -----------------------------------------------------------------

// measureSet is (a) or (b): every file of s at once, by each tool.
func (wb *wanBench) measureSet(s *fileSet, sec string, serial int) {
	ds, st := wb.dropshipSet(s)
	rsync := wb.setBaseline(s, "rsync", func(ctx context.Context, dir string) (run, error) {
		return timed(wb.w.rsyncCmd(ctx, s.dir, s.names, dir))
	})
	tar := wb.setBaseline(s, "tar", func(ctx context.Context, dir string) (run, error) {
		return wb.w.tarPipe(ctx, s.dir, s.names, dir)
	})
	scp := wb.serialBaseline("scp f1 … fN host:dir", s, serial, func(ctx context.Context, names []string, dir string) *exec.Cmd {
		return wb.w.scpCmd(ctx, s.dir, names, dir)
	})
	sftp := wb.serialBaseline("sftp -b (one put per file)", s, serial, func(ctx context.Context, names []string, dir string) *exec.Cmd {
		return wb.w.sftpPuts(ctx, s.dir, names, dir)
	})

	ref := "rsync " + wb.value(rsync)
	rel := func(o outcome) string {
		if o.timedOut || rsync.timedOut {
			return "–"
		}
		return ratio(o.wall.Seconds(), rsync.wall.Seconds())
	}
	dropRow := row{sec: sec, what: s.label + ", dropship (dropped at once into the watch folder of the running agent)", value: wb.value(ds),
		ref: ref, ratio: rel(ds), target: fmt.Sprintf("≤ %.1f", wanTargetSets), result: fail}
	if !ds.timedOut && !rsync.timedOut {
		dropRow.result = check(ds.wall.Seconds() <= wanTargetSets*rsync.wall.Seconds())
	}
	wb.rep.add(dropRow)
	wb.rep.add(row{sec: sec, what: s.label + ", rsync -a (one run, all files)", value: wb.value(rsync), ratio: "1.00"})
	wb.rep.add(row{sec: sec, what: s.label + ", tar c | ssh tar x", value: wb.value(tar), ref: ref, ratio: rel(tar)})
	for _, x := range []struct {
		label string
		o     outcome
	}{{"one scp f1 … fN host:dir", scp}, {"sftp -b, one put per file, one session", sftp}} {
		label := s.label + ", " + x.label
		if x.o.note != "" {
			label += " (" + x.o.note + ")"
		}
		wb.rep.add(row{sec: sec, what: label, value: wb.value(x.o), ref: ref, ratio: rel(x.o)})
	}
	if !ds.timedOut {
		wb.rep.note("(%s) %s, dropship, after the drop: %s; all on the remote at %s.", sec, s.label, st, millis(ds.wall))
	}
}

// setBaseline runs a baseline that sends all of s into a fresh remote folder.
func (wb *wanBench) setBaseline(s *fileSet, tool string, f func(ctx context.Context, dir string) (run, error)) outcome {
	dir := wb.scratchDir(fmt.Sprintf("%s-%s-%dms", s.tag, tool, wb.phase.oneWay.Milliseconds()))
	defer wb.removeAll(dir)
	o := wb.baseline(s.label+", "+tool, func(ctx context.Context) (run, error) { return f(ctx, dir) })
	if !o.timedOut {
		wb.expectFiles(dir, len(s.names), s.size)
	}
	return o
}

// --- (c) one large file --------------------------------------------------------

func (wb *wanBench) measureBig() {
	t := wb.t
	ms := wb.phase.oneWay.Milliseconds()
	label := wb.bigLabel()
	name := "big.dat"
	one := func(tool string, f func(ctx context.Context, dir string) (run, error)) outcome {
		syscall.Sync()
		dir := wb.scratchDir(fmt.Sprintf("big-%s-%dms", tool, ms))
		defer wb.removeAll(dir)
		o := wb.baseline(label+", "+tool, func(ctx context.Context) (run, error) { return f(ctx, dir) })
		if !o.timedOut {
			wb.expectFile(filepath.Join(dir, name), wb.wp.big)
		}
		return o
	}

	// dropship first, the baselines after it.
	syscall.Sync()
	var ds outcome
	var self, children time.Duration
	var st stages
	func() {
		before, err := snapCPU(wb.w.agent.pid())
		if err != nil {
			t.Fatal(err)
		}
		wb.logf("%s, dropship ...", label)
		d := wb.dropFiles(fmt.Sprintf("big-%dms-", ms), []string{wb.bigSrc})
		var remoteName string
		for n := range d.remote {
			remoteName = n
		}
		dst := filepath.Join(wb.w.remote, remoteName)
		if err := pollEvery(5*time.Millisecond, wb.wp.rowTimeout, func() bool {
			_, err := os.Lstat(dst)
			return err == nil
		}); err != nil {
			wb.agentTimedOut(label+", dropship", 0, 1)
			ds = outcome{timedOut: true}
			return
		}
		ds.wall = time.Since(d.at)
		wb.logf("%s, dropship: %s", label, secs(ds.wall))
		wb.expectFile(dst, wb.wp.big)
		evs, err := wb.finishWithin(d, wb.wp.rowTimeout)
		if err != nil {
			wb.rep.note("**odd:** %s, dropship: the file arrived in %s, but %v; the agent was restarted, and its CPU time is not shown.", label, secs(ds.wall), err)
			wb.w.restartAgent()
			wb.warmAgent()
			ds.cpu = -1
			return
		}
		after, err := snapCPU(wb.w.agent.pid())
		if err != nil {
			t.Fatal(err)
		}
		self, children = cpuBetween(before, after)
		ds.cpu = self + children
		st = stagesOf(evs, d)
	}()
	rsync := one("rsync", func(ctx context.Context, dir string) (run, error) {
		return timed(wb.w.rsyncCmd(ctx, wb.w.data, []string{name}, dir))
	})
	tar := one("tar", func(ctx context.Context, dir string) (run, error) {
		return wb.w.tarPipe(ctx, wb.w.data, []string{name}, dir)
	})
	scp := one("scp", func(ctx context.Context, dir string) (run, error) {
		return timed(wb.w.scpCmd(ctx, wb.w.data, []string{name}, dir))
	})
	sftp := one("sftp", func(ctx context.Context, dir string) (run, error) {
		return timed(wb.w.sftpPuts(ctx, wb.w.data, []string{name}, dir))
	})

	rate := func(o outcome) string {
		if o.timedOut {
			return wb.value(o)
		}
		return fmt.Sprintf("%.1f MB/s (%s)", mbps(wb.wp.big, o.wall), secs(o.wall))
	}
	ref := "scp " + rate(scp)
	rel := func(o outcome) string {
		if o.timedOut || scp.timedOut {
			return "–"
		}
		return ratio(scp.wall.Seconds(), o.wall.Seconds()) // rate / scp's rate
	}
	dropRow := row{sec: "c", what: label + ", dropship: renamed into the watch folder → complete under its final remote name", value: rate(ds),
		ref: ref, ratio: rel(ds), target: fmt.Sprintf("≥ %.1f", wanTargetBig), result: fail}
	if !ds.timedOut && !scp.timedOut {
		dropRow.result = check(scp.wall.Seconds() >= wanTargetBig*ds.wall.Seconds())
	}
	wb.rep.add(dropRow)
	wb.rep.add(row{sec: "c", what: label + ", scp", value: rate(scp), ratio: "1.00"})
	wb.rep.add(row{sec: "c", what: label + ", rsync -a", value: rate(rsync), ref: ref, ratio: rel(rsync)})
	wb.rep.add(row{sec: "c", what: label + ", tar c | ssh tar x", value: rate(tar), ref: ref, ratio: rel(tar)})
	wb.rep.add(row{sec: "c", what: label + ", sftp -b: put", value: rate(sftp), ref: ref, ratio: rel(sftp)})

	gib := float64(wb.wp.big) / (1 << 30)
	perGiB := func(d time.Duration) string { return fmt.Sprintf("%.2f s/GiB", d.Seconds()/gib) }
	cpuRow := row{sec: "c", what: "CPU per GiB during (c): the agent (dropship, hash included, + its OpenSSH children)", target: fmt.Sprintf("≤ %.1f", wanTargetCPU), result: fail}
	switch {
	case ds.timedOut || ds.cpu < 0:
		cpuRow.value = "not measured"
	case scp.timedOut:
		cpuRow.value = perGiB(ds.cpu)
	default:
		cpuRow.value = perGiB(ds.cpu)
		cpuRow.ref = "scp + its ssh " + perGiB(scp.cpu)
		cpuRow.ratio = ratio(ds.cpu.Seconds(), scp.cpu.Seconds())
		cpuRow.result = check(ds.cpu.Seconds() <= wanTargetCPU*scp.cpu.Seconds())
	}
	wb.rep.add(cpuRow)
	var others []string
	for _, x := range []struct {
		tool string
		o    outcome
	}{{"scp", scp}, {"rsync", rsync}, {"tar | ssh", tar}, {"sftp", sftp}} {
		if !x.o.timedOut {
			others = append(others, x.tool+" "+perGiB(x.o.cpu))
		}
	}
	wb.rep.add(row{sec: "c", what: "CPU per GiB during (c) of the baselines, each with its ssh (from wait4's rusage)", value: strings.Join(others, ", ")})
	if !ds.timedOut && ds.cpu >= 0 {
		wb.rep.note("(c) %s, dropship, after the rename: %s; on the remote at %s; CPU: the dropship process %s, its OpenSSH children %s (%s in all).",
			label, st, millis(ds.wall), secs(self), secs(children), secs(ds.cpu))
	}
}

// --- (d) latency ------------------------------------------------------------------

func (wb *wanBench) measureLatency() {
	ms := wb.phase.oneWay.Milliseconds()
	loopDrop := wb.w.mkdir(fmt.Sprintf("drop-inotify-%dms", ms))
	loopRemote := wb.scratchDir(fmt.Sprintf("inotify-%dms", ms))
	wb.logf("(d) latency, %d samples of each ...", wb.phase.samples)
	loop := wb.startInotifyLoop(loopDrop, loopRemote)
	defer loop.stop()
	seed := uint64(5000 + ms*100)
	var dropship, loopTimes []time.Duration
	var queued, started, finished []time.Duration
	for r := range 2 { // r == 0 is one warm-up sample of each
		n := wb.phase.samples
		if r == 0 {
			n = 1
		}
		d := &drop{locals: map[string]bool{}, remote: map[string]bool{}, mark: wb.w.events.mark()}
		type sample struct {
			at    time.Time
			local string
		}
		var ds []sample
		for i := range n {
			seed++
			name := fmt.Sprintf("lat-%dms-r%d-%02d.dat", ms, r, i)
			took, at := wb.latencySample(wb.w.watch, wb.w.remote, name, seed)
			local := filepath.Join(wb.w.watch, name)
			d.locals[local], d.remote[name] = true, true
			ds = append(ds, sample{at, local})
			if r > 0 {
				dropship = append(dropship, took)
			}
		}
		evs := wb.finish(d)
		for i := range n {
			seed++
			took, _ := wb.latencySample(loopDrop, loopRemote, fmt.Sprintf("lat-%dms-r%d-%02d.dat", ms, r, i), seed)
			if r > 0 {
				loopTimes = append(loopTimes, took)
			}
		}
		if err := emptyDir(loopRemote); err != nil {
			wb.t.Fatal(err)
		}
		if err := emptyDir(loopDrop); err != nil {
			wb.t.Fatal(err)
		}
		if r > 0 {
			for _, s := range ds {
				x := stagesOf(evs, &drop{at: s.at, locals: map[string]bool{s.local: true}})
				queued, started, finished = append(queued, x.firstQueued), append(started, x.firstStarted), append(finished, x.lastFinished)
			}
		}
	}
	if s := loop.stderr.String(); strings.Count(s, "\n") > 2 {
		wb.rep.note("**odd:** the inotifywait + scp loop printed:\n```\n%s\n```", tail(s, 10))
	}
	d50, d95 := percentile(dropship, 50), percentile(dropship, 95)
	l50, l95 := percentile(loopTimes, 50), percentile(loopTimes, 95)
	wb.rep.add(row{sec: "d", what: fmt.Sprintf("4 KiB drop-to-delivered p50, dropship (defaults; %d samples)", len(dropship)),
		value: millis(d50), ref: "inotifywait + scp p50 " + millis(l50), ratio: ratio(d50.Seconds(), l50.Seconds()),
		target: fmt.Sprintf("≤ %.2f", wanTargetLatency), result: check(d50.Seconds() <= wanTargetLatency*l50.Seconds())})
	wb.rep.add(row{sec: "d", what: "4 KiB drop-to-delivered p95, dropship", value: millis(d95), ref: "inotifywait + scp p95 " + millis(l95),
		ratio: ratio(d95.Seconds(), l95.Seconds())})
	wb.rep.add(row{sec: "d", what: fmt.Sprintf("4 KiB drop-to-delivered p50 / p95, inotifywait -m + scp loop (a login per file; %d samples)", len(loopTimes)),
		value: millis(l50) + " / " + millis(l95)})
	wb.rep.note("(d) samples (ms): dropship %s; inotifywait + scp loop %s. dropship's stages (medians, from the rename): queued %s, attempt started %s, attempt finished %s, on the remote %s.",
		list(dropship, msNum), list(loopTimes, msNum), millis(median(queued)), millis(median(started)), millis(median(finished)), millis(median(dropship)))
}

// --- the report ---------------------------------------------------------------

// wanReport is the WAN benchmark's results: a table per latency.
type wanReport struct {
	started time.Time
	setup   []string
	phases  []*wanPhaseReport
}

type wanPhaseReport struct {
	title string // "25ms each way (50ms round trip)"
	intro string
	rep   *report
}

func (r *wanReport) markdown(complete bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# dropship WAN benchmark, %s\n\n", r.started.UTC().Format("2006-01-02 15:04 UTC"))
	if !complete {
		b.WriteString("**INCOMPLETE: the run failed before every measurement was made; see the test output.**\n\n")
	}
	for _, s := range r.setup {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	b.WriteString("\nRows: (a) and (b) every file dropped at once, (c) one large file, (d) a single small file's drop-to-delivered latency; " +
		"times until the last file is complete on the remote (dropship) or until the client exits (the baselines). " +
		"Ratios are against rsync in (a) and (b) (time / rsync's time), against scp in (c) (rate / scp's rate, CPU / scp's CPU) " +
		"and against the inotifywait + scp loop in (d) (latency / the loop's).\n")
	for _, ph := range r.phases {
		fmt.Fprintf(&b, "\n## %s\n\n", ph.title)
		if ph.intro != "" {
			fmt.Fprintf(&b, "%s\n\n", ph.intro)
		}
		b.WriteString(ph.rep.table())
		if len(ph.rep.notes) > 0 {
			b.WriteString("\n")
			for _, n := range ph.rep.notes {
				b.WriteString(n)
				b.WriteString("\n\n")
			}
		}
	}
	return b.String()
}

// save writes the report as <dir>/wan-<UTC timestamp>.md and, when latest
// is true, as <dir>/wan-latest.md too; it returns the timestamped path.
func (r *wanReport) save(dir string, complete, latest bool) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	md := []byte(r.markdown(complete))
	p := filepath.Join(dir, "wan-"+r.started.UTC().Format("20060102T150405Z")+".md")
	if err := os.WriteFile(p, md, 0o644); err != nil {
		return "", err
	}
	if latest {
		if err := os.WriteFile(filepath.Join(dir, "wan-latest.md"), md, 0o644); err != nil {
			return "", err
		}
	}
	return p, nil
}

// These run with every `go test ./bench`.

func TestExtrapolate(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		took, fixed time.Duration
		k, n        int
		want        time.Duration
	}{
		{took: 11 * s, fixed: s, k: 100, n: 1000, want: 101 * s},
		{took: 11 * s, fixed: s, k: 1000, n: 1000, want: 11 * s},
		{took: s, fixed: 2 * s, k: 10, n: 20, want: s}, // a login slower than the whole run: no negative per-file time
	} {
		if got := extrapolate(c.took, c.fixed, c.k, c.n); got != c.want {
			t.Errorf("extrapolate(%s, %s, %d, %d) = %s, want %s", c.took, c.fixed, c.k, c.n, got, c.want)
		}
	}
}

func TestRsyncShell(t *testing.T) {
	got := rsyncShell([]string{"ssh", "-p", "2222", "-o", "UserKnownHostsFile=/tmp/a b/kh", "-o", `X="y"`})
	want := `ssh -p 2222 -o 'UserKnownHostsFile=/tmp/a b/kh' -o 'X="y"'`
	if got != want {
		t.Errorf("rsyncShell = %s, want %s", got, want)
	}
}

func TestKnownHostsFor(t *testing.T) {
	got, err := knownHostsFor("[127.0.0.1]:2222 ssh-ed25519 AAAA", 2222, 3333)
	if err != nil || got != "[127.0.0.1]:3333 ssh-ed25519 AAAA" {
		t.Errorf("knownHostsFor = %q, %v", got, err)
	}
	if _, err := knownHostsFor("[127.0.0.1]:2223 ssh-ed25519 AAAA", 2222, 3333); err == nil {
		t.Errorf("knownHostsFor with the wrong port: no error")
	}
}
