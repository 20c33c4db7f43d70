package watcher

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// holder runs a shell that opens file with the given redirection ("3>>" to
// write, "3<" to read) and keeps it open until the test ends.
func holder(t *testing.T, redirect, file string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", `exec `+redirect+`"$1"; echo open; read _`, "sh", file)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "open\n" {
		t.Fatalf("holder did not open %s: %q %v", file, line, err)
	}
}

func queryFor(t *testing.T, p string) writerQuery {
	t.Helper()
	st, err := lstatStamp(p)
	if err != nil {
		t.Fatal(err)
	}
	return writerQuery{path: p, id: st.id()}
}

// TestWriterCheck asks both ways (lease probe, and /proc alone) about files
// held open by other processes and by this one.
func TestWriterCheck(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	free := mk("free")
	otherWriter := mk("other-writer")
	otherReader := mk("other-reader")
	selfWriter := mk("self-writer")
	selfRDWR := mk("self-rdwr")

	holder(t, "3>>", otherWriter)
	holder(t, "3<", otherReader)
	for _, p := range []string{selfWriter, selfRDWR} {
		flag := os.O_WRONLY
		if p == selfRDWR {
			flag = os.O_RDWR
		}
		f, err := os.OpenFile(p, flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
	}

	want := map[string]bool{free: false, otherWriter: true, otherReader: false, selfWriter: true, selfRDWR: true}
	var qs []writerQuery
	var names []string
	for p := range want {
		qs = append(qs, queryFor(t, p))
		names = append(names, p)
	}
	for _, lease := range []bool{true, false} {
		res := newWriterCheck(lease).check(qs, time.Now())
		for i, p := range names {
			r := res[i]
			if got := r.state == writerOpen; got != want[p] {
				t.Errorf("lease=%v: %s: state %d, want writer=%v", lease, filepath.Base(p), r.state, want[p])
			}
			if !want[p] && os.Geteuid() == 0 && r.state != writerNone {
				t.Errorf("lease=%v: %s: as root the answer must be definite, got state %d", lease, filepath.Base(p), r.state)
			}
		}
	}
}

func TestWriterCheckProcUnreadable(t *testing.T) {
	// A /proc where no process's descriptors can be read means "cannot
	// see", never "writer".
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "123"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "123", "fd"), nil, 0o644); err != nil {
		t.Fatal(err) // a file where a folder should be: unreadable as a folder
	}
	c := &writerCheck{procRoot: proc}
	p := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := c.check([]writerQuery{queryFor(t, p)}, time.Now())
	if res[0].state != writerNoneSeen || res[0].hidden != 1 {
		t.Errorf("got state %d hidden %d, want writerNoneSeen with 1 hidden", res[0].state, res[0].hidden)
	}
}

func TestFdFlags(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fdinfo")
	if err := os.WriteFile(p, []byte("pos:\t0\nflags:\t0100001\nmnt_id:\t27\nino:\t1234\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	flags, err := fdFlags(p)
	if err != nil || flags != 0o100001 {
		t.Errorf("fdFlags = %o, %v; want 100001", flags, err)
	}
}

// TestWriterCheckProcRateLimit: /proc scans take at most a tenth of the
// time; a batch that needs one too soon is deferred, not guessed.
func TestWriterCheckProcRateLimit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	qs := []writerQuery{queryFor(t, p)}
	c := newWriterCheck(false)
	if r := c.check(qs, time.Now())[0]; r.deferred {
		t.Fatalf("first scan deferred")
	}
	if !c.nextProc.After(time.Now()) {
		t.Skip("the /proc scan took no measurable time")
	}
	if r := c.check(qs, time.Now())[0]; !r.deferred {
		t.Errorf("second scan right away not deferred: %+v", r)
	}
	if r := c.check(qs, c.nextProc)[0]; r.deferred {
		t.Errorf("scan at nextProc deferred: %+v", r)
	}
}
