package bench

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Results of a measurement against its target.
const (
	pass = "PASS"
	fail = "FAIL"
	info = "" // no target: context for the rows that have one
)

// row is one line of the results table.
type row struct {
	sec    string // the letter: a, b, c, d, e
	what   string // what was measured
	value  string // the measurement (median of the repetitions)
	ref    string // what it is compared with
	ratio  string // value / ref
	target string // what the issue asks, "" for context rows
	result string // pass, fail or info
}

// report collects the table and the notes that explain it.
type report struct {
	started time.Time
	setup   []string // how and where it was measured
	rows    []row
	notes   []string // markdown paragraphs: stage timings, per-repetition values
}

func (r *report) add(rw row) { r.rows = append(r.rows, rw) }

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// check returns pass or fail.
func check(ok bool) string {
	if ok {
		return pass
	}
	return fail
}

// failed lists the rows that missed their target.
func (r *report) failed() []row {
	var out []row
	for _, rw := range r.rows {
		if rw.result == fail {
			out = append(out, rw)
		}
	}
	return out
}

// table renders the results table in markdown.
func (r *report) table() string {
	var b strings.Builder
	b.WriteString("| | measurement | value | compared with | ratio | target | result |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	rows := slices.Clone(r.rows)
	slices.SortStableFunc(rows, func(x, y row) int { return strings.Compare(x.sec, y.sec) })
	for _, rw := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n",
			cell(rw.sec), cell(rw.what), cell(rw.value), cell(rw.ref), cell(rw.ratio), cell(rw.target), cell(rw.result))
	}
	return b.String()
}

// markdown is the whole results file.
func (r *report) markdown(complete bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# dropship benchmark, %s\n\n", r.started.UTC().Format("2006-01-02 15:04 UTC"))
	if !complete {
		b.WriteString("**INCOMPLETE: the run failed before every measurement was made; see the test output.**\n\n")
	}
	for _, s := range r.setup {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	b.WriteString("\n")
	b.WriteString(r.table())
	if len(r.notes) > 0 {
		b.WriteString("\n## Where the time goes, and every repetition\n\n")
		for _, n := range r.notes {
			b.WriteString(n)
			b.WriteString("\n\n")
		}
	}
	return b.String()
}

// save writes the report as <dir>/<UTC timestamp><suffix>.md and, when
// latest is true, as <dir>/latest.md too; it returns the timestamped path.
func (r *report) save(dir, suffix string, complete, latest bool) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	md := []byte(r.markdown(complete))
	p := filepath.Join(dir, r.started.UTC().Format("20060102T150405Z")+suffix+".md")
	if err := os.WriteFile(p, md, 0o644); err != nil {
		return "", err
	}
	if latest {
		if err := os.WriteFile(filepath.Join(dir, "latest.md"), md, 0o644); err != nil {
			return "", err
		}
	}
	return p, nil
}

// --- statistics and formats ------------------------------------------------

// median of ds (the mean of the middle two for an even count).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// mbps is the rate of size bytes in d, in MB/s (10^6 bytes, as OpenSSH and
// most tools print).
func mbps(size int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(size) / 1e6 / d.Seconds()
}

// secs formats d in seconds with three significant decimals at most.
func secs(d time.Duration) string {
	switch {
	case d >= 100*time.Second:
		return fmt.Sprintf("%.0f s", d.Seconds())
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// millis formats d in milliseconds.
func millis(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// mib formats a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// ratio formats a/b with two decimals.
func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// list formats every repetition's value.
func list(ds []time.Duration, f func(time.Duration) string) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = f(d)
	}
	return strings.Join(s, ", ")
}

// These run with every `go test ./...`: the helpers the table rests on.

func TestMedianAndPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	cases := []struct {
		in       []time.Duration
		med, p95 time.Duration
	}{
		{ms(3, 1, 2), 2 * time.Millisecond, 3 * time.Millisecond},
		{ms(4, 1, 3, 2), 2500 * time.Microsecond, 4 * time.Millisecond},
		{ms(7), 7 * time.Millisecond, 7 * time.Millisecond},
		{nil, 0, 0},
	}
	for _, c := range cases {
		if got := median(c.in); got != c.med {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.med)
		}
		if got := percentile(c.in, 95); got != c.p95 {
			t.Errorf("percentile(%v, 95) = %v, want %v", c.in, got, c.p95)
		}
	}
	// 30 samples 1..30 ms: nearest rank of p50 is the 15th, of p95 the 29th.
	var thirty []time.Duration
	for i := 30; i >= 1; i-- {
		thirty = append(thirty, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(thirty, 50); got != 15*time.Millisecond {
		t.Errorf("p50 of 1..30 ms = %v, want 15ms", got)
	}
	if got := percentile(thirty, 95); got != 29*time.Millisecond {
		t.Errorf("p95 of 1..30 ms = %v, want 29ms", got)
	}
}

func TestCPUBetween(t *testing.T) {
	k := func(pid int) procKey { return procKey{pid: pid, start: uint64(pid) * 10} }
	a := cpuSnap{self: 1 * time.Second, reaped: 2 * time.Second, live: map[procKey]time.Duration{
		k(10): 5 * time.Second,        // the ssh master, alive throughout
		k(11): 300 * time.Millisecond, // an sftp that ends before b
	}}
	b := cpuSnap{self: 1500 * time.Millisecond, reaped: 2*time.Second + 900*time.Millisecond, live: map[procKey]time.Duration{
		k(10): 7 * time.Second,        // +2s
		k(12): 400 * time.Millisecond, // a new sftp, still running
	}}
	// k(11) ended with 900ms in total, reaped: 600ms of it fell between a and b.
	self, children := cpuBetween(a, b)
	if self != 500*time.Millisecond {
		t.Errorf("self = %v, want 500ms", self)
	}
	if want := 2*time.Second + 400*time.Millisecond + 600*time.Millisecond; children != want {
		t.Errorf("children = %v, want %v", children, want)
	}
}

func TestReadStatOfThisProcess(t *testing.T) {
	st, err := readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != os.Getppid() || st.start == 0 || st.state == "" {
		t.Errorf("readStat(self) = %+v; want ppid %d, a start time and a state", st, os.Getppid())
	}
	rss, hwm, err := memory(os.Getpid())
	if err != nil || rss <= 0 || hwm < rss {
		t.Errorf("memory(self) = %d, %d, %v; want 0 < VmRSS <= VmHWM", rss, hwm, err)
	}
}

func TestReportTable(t *testing.T) {
	r := &report{started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), setup: []string{"loopback"}}
	r.add(row{sec: "b", what: "1000 × 4 KiB, dropship", value: secs(2100 * time.Millisecond), ref: "batched scp 1.90 s",
		ratio: ratio(2.1, 1.9), target: "≤ 1.2", result: check(2.1/1.9 <= 1.2)})
	r.add(row{sec: "b", what: "1000 × 4 KiB, tar | ssh tar", value: secs(400 * time.Millisecond)})
	md := r.markdown(true)
	for _, want := range []string{
		"# dropship benchmark, 2026-01-02 03:04 UTC",
		"| b | 1000 × 4 KiB, dropship | 2.10 s | batched scp 1.90 s | 1.11 | ≤ 1.2 | PASS |",
		"| b | 1000 × 4 KiB, tar \\| ssh tar | 0.40 s |  |  |  |  |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if len(r.failed()) != 0 {
		t.Errorf("failed() = %v, want none", r.failed())
	}
	dir := t.TempDir()
	p, err := r.save(dir, "", false, false)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p); err != nil || !strings.Contains(string(b), "INCOMPLETE") {
		t.Errorf("an incomplete run's file %s should say so: %v\n%s", p, err, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "latest.md")); err == nil {
		t.Errorf("save(latest = false) wrote latest.md")
	}
}
