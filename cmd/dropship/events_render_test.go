package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
)

// goldenDir holds one real event of every type, written by the events
// package's golden test from its constructors.
const goldenDir = "../../events/testdata"

func goldenEvent(t *testing.T, typ string) events.Event {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, typ+".json"))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// goldenStyle prints times in UTC on the day of the golden events.
var goldenStyle = lineStyle{home: "edge-01", now: time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC), loc: time.UTC}

func TestFormatEventLines(t *testing.T) {
	const file = "/srv/drop/acme/invoices/2025-03/INV-10442.pdf -> /incoming/invoices/2025-03/INV-10442.pdf"
	for typ, want := range map[string]string{
		events.TypeTransferQueued:    "09:26:53 queued     acme  " + file + "  46.0 MiB (settled: size and mtime unchanged for 2s)",
		events.TypeTransferStarted:   "09:26:54 started    acme  " + file + "  attempt 1, 46.0 MiB",
		events.TypeTransferRetrying:  "09:27:09 retrying   acme  " + file + "  attempt 1: connect-timeout: ssh: connect to host sftp.acme.example port 22: Connection timed out; next attempt at 09:27:14",
		events.TypeTransferCompleted: "09:27:20 completed  acme  " + file + "  46.0 MiB in 4.5s (10.2 MiB/s), attempt 2",
		events.TypeTransferFailed:    "09:27:16 failed     acme  " + file + "  attempt 2: auth: Permission denied (publickey,password).",
		events.TypeProgress:          "09:27:18 progress   acme  /srv/drop/acme/invoices/2025-03/INV-10442.pdf  57%  26.2 MiB / 46.0 MiB  10.5 MiB/s  ETA 2s",
		events.TypeLog:               "09:27:15 log        acme  Warning: Permanently added 'sftp.acme.example' (ED25519) to the list of known hosts.",
		events.TypeAgentStarted:      "09:26:48 agent      edge-01 started: watching 2 folders for 1 target (dropship 0.4.0, pid 4711 on edge-01.example.net)",
		events.TypeAgentError:        "10:26:54 agent      edge-01 error: cannot watch a folder: watch /srv/drop/globex: no such file or directory (dropship 0.4.0, pid 4711 on edge-01.example.net)",
	} {
		if got := formatEvent(goldenEvent(t, typ), goldenStyle); got != want {
			t.Errorf("%s:\ngot  %q\nwant %q", typ, got, want)
		}
	}
}

func TestFormatEventNamesOtherAgentsAndOlderDays(t *testing.T) {
	st := goldenStyle
	st.home = "edge-02"
	st.now = st.now.AddDate(0, 0, 1)
	got := formatEvent(goldenEvent(t, events.TypeTransferStarted), st)
	if want := "2025-03-14 09:26:54 started    acme@edge-01  "; !strings.HasPrefix(got, want) {
		t.Errorf("got %q, want it to start with %q", got, want)
	}
}

func TestFormatEventColorsOnlyWhenAsked(t *testing.T) {
	ev := goldenEvent(t, events.TypeTransferFailed)
	if got := formatEvent(ev, goldenStyle); strings.ContainsRune(got, 0x1b) {
		t.Errorf("no color asked, got %q", got)
	}
	st := goldenStyle
	st.color = true
	if got := formatEvent(ev, st); !strings.Contains(got, sgrRed+"failed"+sgrReset) {
		t.Errorf("color asked, got %q", got)
	}
}

// A remote or a file name could carry escape sequences: they must never
// reach the terminal.
func TestFormatEventCleansControlCharacters(t *testing.T) {
	s := events.Subjects{Prefix: "dropship", Agent: "edge-01"}
	ev, err := events.NewTransfer(s, events.TransferFailed, events.Transfer{
		Target:    events.TargetRef{Name: "acme"},
		LocalPath: "/drop/evil\x1b]0;pwned\x07name\r\n.txt",
		Error:     &events.ErrorInfo{Class: "unknown", Message: "line one\nline two \x1b[2J"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := formatEvent(ev, goldenStyle)
	if strings.ContainsAny(got, "\x1b\x07\r\n") {
		t.Fatalf("control characters printed: %q", got)
	}
	for _, want := range []string{`/drop/evil\x1b]0;pwned\aname\r\n.txt`, `line one\nline two \x1b[2J`} {
		if !strings.Contains(got, want) {
			t.Errorf("got %q, want it to show %q", got, want)
		}
	}
}

func TestFormatUnknownType(t *testing.T) {
	ev := events.Event{Type: "dev.dropship.something.new", ID: "x", Time: goldenStyle.now, NATSSubject: "dropship.edge-01.x"}
	if got, want := formatEvent(ev, goldenStyle), "12:00:00 event      dev.dropship.something.new dropship.edge-01.x"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestHumanUnits(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 1000: "1.0 KiB", 1023*1024 + 1000: "1.0 MiB", 48213760: "46.0 MiB", 1 << 40: "1.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for s, want := range map[int]string{0: "0s", 59: "59s", 65: "1m05s", 3600*2 + 240: "2h04m"} {
		if got := humanETA(s); got != want {
			t.Errorf("humanETA(%d) = %q, want %q", s, got, want)
		}
	}
	for s, want := range map[float64]string{4.5: "4.5s", 1: "1s", 15.25: "15.3s", 125: "2m5s"} {
		if got := humanSeconds(s); got != want {
			t.Errorf("humanSeconds(%v) = %q, want %q", s, got, want)
		}
	}
}

var barNow = time.Date(2025, 3, 14, 9, 27, 18, 0, time.UTC)

func testBars() []*bar {
	return []*bar{
		{id: "1", file: "/srv/drop/acme/invoices/2025-03/INV-10442.pdf", target: "acme", sent: 27481850, size: 48213760, rate: 11010048, eta: 2, updated: barNow},
		{id: "2", file: "/srv/drop/globex/a-much-longer-file-name-for-the-partner.csv", target: "globex@edge-02", sent: 0, size: 1 << 30, updated: barNow.Add(-42 * time.Second)},
	}
}

func TestBarLayoutAtWidths(t *testing.T) {
	for _, tc := range []struct {
		width int
		want  []string
	}{
		{160, []string{
			"INV-10442.pdf                                acme            [=====================>                  ]   57%   26.2 MiB/46.0 MiB    10.5 MiB/s  ETA 2s",
			"a-much-longer-file-name-for-the-partner.csv  globex@edge-02  [                                        ]    0%        0 B/1.0 GiB                 idle 42s",
		}},
		{80, []string{
			"INV-10442.pdf   [===>    ]   57%   26.2 MiB/46.0 MiB    10.5 MiB/s  ETA 2s",
			"a-much…ner.csv  [        ]    0%        0 B/1.0 GiB                 idle 42s",
		}},
		{60, []string{
			"INV-10442.pdf         [===>    ]   57%   26.2 MiB/46.0 MiB",
			"a-much-lo…artner.csv  [        ]    0%        0 B/1.0 GiB",
		}},
		{40, []string{
			"INV-10442.pdf          [===>    ]   57%",
			"a-much-lon…artner.csv  [        ]    0%",
		}},
		{20, []string{
			"INV-10442.pdf   57%",
			"a-much…er.csv    0%",
		}},
		{10, []string{
			"IN…df 57%",
			"a-…csv 0%",
		}},
		{4, []string{"57%", "0%"}},
		{1, []string{"", ""}},
		{0, []string{"", ""}},
	} {
		got := barLines(tc.width, barNow, testBars())
		for i := range got {
			if w := textWidth(got[i]); w > max(tc.width-1, 0) {
				t.Errorf("width %d: line %q is %d columns wide", tc.width, got[i], w)
			}
		}
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("width %d:\ngot:\n%s\nwant:\n%s", tc.width, quoteLines(got), quoteLines(tc.want))
		}
	}
}

func quoteLines(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("|" + l + "|\n")
	}
	return b.String()
}

// Every width from 0 to 200 keeps every bar inside the terminal, wide
// characters included.
func TestBarLinesNeverWrap(t *testing.T) {
	bars := append(testBars(), &bar{id: "3", file: "/drop/請求書-二〇二五年三月.pdf", target: "acme", sent: 5, size: 10, stalled: true, updated: barNow})
	for width := range 200 {
		for _, l := range barLines(width, barNow, bars) {
			if w := textWidth(l); w > max(width-1, 0) {
				t.Fatalf("width %d: %q is %d columns", width, l, w)
			}
		}
	}
}

func TestBarStatus(t *testing.T) {
	for _, tc := range []struct {
		b    bar
		want string
	}{
		{bar{eta: 65, updated: barNow}, "ETA 1m05s"},
		{bar{rate: 10, sent: 0, size: 100, updated: barNow}, "ETA 10s"},
		{bar{stalled: true, eta: 5, updated: barNow}, "stalled"},
		{bar{eta: 5, updated: barNow.Add(-staleAfter)}, "idle 10s"},
		{bar{updated: barNow}, ""},
	} {
		if got := tc.b.status(barNow); got != tc.want {
			t.Errorf("%+v: status %q, want %q", tc.b, got, tc.want)
		}
	}
}

func TestFrame(t *testing.T) {
	bars := testBars()
	// First frame: nothing to erase.
	out, rows := frame(0, 80, 24, barNow, []string{"line 1", "line 2"}, bars)
	if rows != 2 {
		t.Errorf("rows = %d, want 2", rows)
	}
	want := "line 1\nline 2\n" + strings.Join(barLines(80, barNow, bars), "\n")
	if string(out) != want {
		t.Errorf("first frame %q, want %q", out, want)
	}
	// Next frame: back to the first bar row, erase, lines, bars.
	out, rows = frame(2, 80, 24, barNow, []string{"line 3"}, bars[:1])
	if want := "\r\x1b[1A\x1b[J" + "line 3\n" + barLines(80, barNow, bars[:1])[0]; string(out) != want || rows != 1 {
		t.Errorf("second frame %q (%d rows), want %q", out, rows, want)
	}
	// Last frame: the bars go away.
	out, rows = frame(1, 80, 24, barNow, nil, nil)
	if string(out) != "\r\x1b[J" || rows != 0 {
		t.Errorf("last frame %q (%d rows)", out, rows)
	}
	// More bars than the screen holds: the last row counts the rest.
	many := make([]*bar, 30)
	for i := range many {
		many[i] = &bar{id: string(rune('a' + i)), file: "f", size: 1, updated: barNow}
	}
	out, rows = frame(0, 80, 10, barNow, nil, many)
	lines := strings.Split(string(out), "\n")
	if rows != 8 || len(lines) != 8 || lines[7] != "… and 23 more transfers" {
		t.Errorf("%d rows, lines %q", rows, lines)
	}
}

func TestShorten(t *testing.T) {
	for _, tc := range []struct {
		s    string
		w    int
		want string
	}{
		{"INV-10442.pdf", 13, "INV-10442.pdf"},
		{"INV-10442.pdf", 9, "INV-….pdf"},
		{"INV-10442.pdf", 1, "…"},
		{"INV-10442.pdf", 0, ""},
		{"請求書請求書.pdf", 7, "請…pdf"},
	} {
		got := shorten(tc.s, tc.w)
		if got != tc.want || textWidth(got) > tc.w {
			t.Errorf("shorten(%q, %d) = %q, want %q", tc.s, tc.w, got, tc.want)
		}
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"plain/ünïcode 名前": "plain/ünïcode 名前",
		"a\tb":             `a\tb`,
		"\x1b[31mred":      `\x1b[31mred`,
		"bad\xffutf8":      `bad\xffutf8`,
		"line\u2028sep":    `line\u2028sep`,
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNoticeLine(t *testing.T) {
	got := noticeLine(goldenStyle, goldenStyle.now, "warning", "dropped\x1b 3")
	if want := `12:00:00 warning    dropped\x1b 3`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if bytes.ContainsRune([]byte(got), 0x1b) {
		t.Error("escape byte in a notice")
	}
}
