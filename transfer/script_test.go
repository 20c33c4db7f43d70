package transfer

import (
	"errors"
	"strings"
	"testing"
)

// unquote reproduces what sftp's makeargv() and then glob(3) or
// undo_glob_escape() make of an unquoted argument (OPENSSH.md §11, sftp.c).
func unquote(q string) string {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		if q[i] == '\\' && i+1 < len(q) {
			i++
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

func TestSFTPQuote(t *testing.T) {
	names := []string{
		"plain.txt", "with space.txt", `quote'single.txt`, `quote"double.txt`, "cmd$(touch pwned).txt",
		"back`touch pwned`.txt", "semi;touch pwned;.txt", "pipe|tee pwned", "amp&touch pwned&.txt",
		"glob*.txt", "q?.txt", "br[a].txt", `back\slash.txt`, "-dash.txt", "a:b/c", "ünïcødé-日本.txt",
		"#hash", "tab\there", strings.Repeat("x", 255), "~tilde", "{brace}",
	}
	for _, n := range names {
		q, err := sftpQuote("/d/" + n)
		if err != nil {
			t.Fatalf("%q: %v", n, err)
		}
		if got := unquote(q); got != "/d/"+n {
			t.Errorf("%q quoted as %q reads back as %q", n, q, got)
		}
		if strings.ContainsAny(q, " \t\"'#") && !escapedOnly(q, " \t\"'#") {
			t.Errorf("%q: unescaped special character in %q", n, q)
		}
	}
	for _, bad := range []string{"new\nline", "cr\rhere", "nul\x00", ""} {
		if _, err := sftpQuote(bad); !errors.Is(err, errUnsafeName) {
			t.Errorf("%q: err = %v, want errUnsafeName", bad, err)
		}
	}
}

// escapedOnly reports whether every character of set in q follows a backslash.
func escapedOnly(q, set string) bool {
	for i := 0; i < len(q); i++ {
		if q[i] == '\\' {
			i++
			continue
		}
		if strings.IndexByte(set, q[i]) >= 0 {
			return false
		}
	}
	return true
}

func FuzzSFTPQuote(f *testing.F) {
	f.Add("/a b/$(x)*?[\\")
	f.Fuzz(func(t *testing.T, p string) {
		q, err := sftpQuote(p)
		if err != nil {
			return
		}
		if unquote(q) != p {
			t.Fatalf("%q -> %q -> %q", p, q, unquote(q))
		}
		if strings.ContainsAny(q, "\n\r") {
			t.Fatal("line break in a command")
		}
	})
}

func TestBuildPlan(t *testing.T) {
	items := []Item{
		{ID: "a1", Local: "/drop/x.txt", RemoteDir: "/in", Rel: "x.txt", Size: meterThreshold},
		{ID: "b2", Local: "/drop/sub/deep/y z.txt", RemoteDir: "/in", Rel: "sub/deep/y z.txt"},
		{ID: "c3", Local: "/drop/sub/w.txt", RemoteDir: "/in", Rel: "sub/w.txt"},
		{ID: "d4", Local: "/drop/new\nline", RemoteDir: "/in", Rel: "new\nline"},
		{ID: "e5", Local: "/drop/-d.txt", RemoteDir: ".", Rel: "-d.txt"},
	}
	p := buildPlan(items, true)
	want := []string{
		"progress",
		"put /drop/x.txt /in/.dropship-a1.part",
		"rename /in/.dropship-a1.part /in/x.txt",
		"-mkdir /in/sub",
		"-mkdir /in/sub/deep",
		`put /drop/sub/deep/y\ z.txt /in/sub/deep/.dropship-b2.part`,
		`rename /in/sub/deep/.dropship-b2.part /in/sub/deep/y\ z.txt`,
		"put /drop/sub/w.txt /in/sub/.dropship-c3.part",
		"rename /in/sub/.dropship-c3.part /in/sub/w.txt",
		"put /drop/-d.txt ./.dropship-e5.part",
		"rename ./.dropship-e5.part ./-d.txt",
	}
	if got := strings.TrimSuffix(p.script(), "\n"); got != strings.Join(want, "\n") {
		t.Errorf("script:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if _, ok := p.rejected[3]; !ok || len(p.rejected) != 1 {
		t.Errorf("rejected = %v, want only the newline name", p.rejected)
	}
	direct := buildPlan(items[:1], false)
	if got := direct.script(); got != "progress\nput /drop/x.txt /in/x.txt\n" {
		t.Errorf("non-atomic script = %q", got)
	}
	small := buildPlan([]Item{{ID: "s", Local: "/drop/s", RemoteDir: "/in", Rel: "s", Size: meterThreshold - 1}}, false)
	if got := small.script(); got != "put /drop/s /in/s\n" {
		t.Errorf("non-atomic script = %q", got)
	}
}

func TestTrackerOutcome(t *testing.T) {
	items := []Item{
		{ID: "a", Local: "/l/a", RemoteDir: "/r", Rel: "a", Size: meterThreshold},
		{ID: "b", Local: "/l/b", RemoteDir: "/r", Rel: "b"},
		{ID: "c", Local: "/l/c", RemoteDir: "/r", Rel: "c"},
	}
	echoAll := func(tr *tracker, n int) {
		for i := 0; i < n; i++ {
			if _, ok := tr.echo("sftp> " + tr.plan.commands[tr.next].text); !ok {
				t.Fatalf("echo %d not recognized", i)
			}
		}
	}
	// All ran, exit 0.
	tr := &tracker{plan: buildPlan(items, true)}
	echoAll(tr, len(tr.plan.commands))
	if done, failed := tr.outcome(0); !done[0] || !done[1] || !done[2] || failed != -1 {
		t.Errorf("clean run: done %v failed %d", done, failed)
	}
	// b's put failed: a done, b failed, c never began.
	tr = &tracker{plan: buildPlan(items, true)}
	echoAll(tr, 4) // progress, put a, rename a, put b
	if _, ok := tr.echo("sftp> something else"); ok {
		t.Error("foreign line taken as an echo")
	}
	done, failed := tr.outcome(1)
	if !done[0] || done[1] || done[2] || failed != 1 || !tr.began(1) || tr.began(2) {
		t.Errorf("failed put: done %v failed %d", done, failed)
	}
	// Connection never came up.
	tr = &tracker{plan: buildPlan(items, true)}
	if done, failed := tr.outcome(255); done[0] || failed != -1 {
		t.Errorf("no session: done %v failed %d", done, failed)
	}
}
