package main

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
)

// runBinary runs the built dropship with args and returns its stdout,
// stderr and exit status.
func runBinary(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(cmd.Environ(), "NO_COLOR=1")
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("dropship %q: %v", args, err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// -h, for the top level and every command, prints the usage on stdout and
// exits 0, as every Unix tool's help does (so `dropship send -h | less`
// works).
func TestHelpGoesToStdoutAndExitsZero(t *testing.T) {
	bin := buildDropship(t)
	cases := map[string][]string{
		"Usage: dropship <command> [flags]": {"-h"},
	}
	for _, c := range commands() {
		cases["Usage: dropship "+c.name] = []string{c.name, "-h"}
	}
	for want, args := range cases {
		forms := [][]string{args}
		if len(args) == 2 {
			forms = append(forms, []string{args[0], "--help"}, []string{"help", args[0]})
		} else {
			forms = append(forms, []string{"--help"}, []string{"help"})
		}
		for _, a := range forms {
			out, errOut, code := runBinary(t, bin, a...)
			if code != 0 || !strings.Contains(out, want) || errOut != "" {
				t.Errorf("dropship %s: exit %d, stdout %q, stderr %q; want exit 0 and stdout with %q, nothing on stderr",
					strings.Join(a, " "), code, out, errOut, want)
			}
		}
	}
	// With no command at all it is a usage error: the usage goes to stderr.
	if out, errOut, code := runBinary(t, bin); code != 2 || out != "" || !strings.Contains(errOut, "Usage: dropship <command>") {
		t.Errorf("dropship (no command): exit %d, stdout %q, stderr %q; want exit 2 and the usage on stderr", code, out, errOut)
	}
}

// An unknown flag is reported once, on stderr, with exit status 2 and a
// pointer to -h; the flag package's own copy of the message is not printed.
func TestUnknownFlagReportedOnce(t *testing.T) {
	bin := buildDropship(t)
	for _, c := range commands() {
		out, errOut, code := runBinary(t, bin, c.name, "-no-such-flag")
		if code != 2 || out != "" {
			t.Errorf("dropship %s -no-such-flag: exit %d, stdout %q; want 2 and nothing on stdout", c.name, code, out)
		}
		if n := strings.Count(errOut, "-no-such-flag"); n != 1 {
			t.Errorf("dropship %s -no-such-flag: stderr names the flag %d times, want once:\n%s", c.name, n, errOut)
		}
		want := "dropship: " + c.name + ": flag provided but not defined: -no-such-flag (see 'dropship " + c.name + " -h')\n"
		if errOut != want {
			t.Errorf("dropship %s -no-such-flag: stderr %q, want %q", c.name, errOut, want)
		}
	}
	_, errOut, code := runBinary(t, bin, "events", "-since", "yesterday")
	if code != 2 || strings.Count(errOut, "yesterday") != 1 {
		t.Errorf("events -since yesterday: exit %d, stderr %q; want 2 and one message", code, errOut)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 4, 15, 30, 0, 0, time.Local)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"90m", now.Add(-90 * time.Minute)},
		{"1h30m", now.Add(-90 * time.Minute)},
		{"1d", now.Add(-24 * time.Hour)},
		{"2d12h", now.Add(-60 * time.Hour)},
		{"1.5d", now.Add(-36 * time.Hour)},
		{"2026-12-01", time.Date(2026, 12, 1, 0, 0, 0, 0, time.Local)},
		{"2026-12-01T10:00", time.Date(2026, 12, 1, 10, 0, 0, 0, time.Local)},
		{"2026-12-01T10:00:05", time.Date(2026, 12, 1, 10, 0, 5, 0, time.Local)},
		{"2026-12-01 10:00", time.Date(2026, 12, 1, 10, 0, 0, 0, time.Local)},
		{"2026-12-01T10:00:00Z", time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)},
		{"2026-12-01T10:00:00+02:00", time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)},
	} {
		got, err := parseSince(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "-5m", "0s", "0d", "yesterday", "1x", "2d-3h", "2026-13-01", "2026-12-05", "2027-01-01T00:00"} {
		if got, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) = %v, want an error", bad, got)
		}
	}
}

// An unknown -type names the nearest known one.
func TestEventsTypeSuggestsTheNearest(t *testing.T) {
	for typ, want := range map[string]string{
		"complted":                        `did you mean "completed"?`,
		"Failed":                          `did you mean "failed"?`,
		"agent.stoping":                   `did you mean "agent.stopping"?`,
		"progres":                         `did you mean "progress"?`,
		"transfers":                       `did you mean "transfer"?`,
		"dev.dropship.transfer.complete":  `did you mean "dev.dropship.transfer.completed"?`,
		"transfer.retry":                  `did you mean "transfer.retrying"?`,
		"xyzzy-plugh":                     "",
		"dev.dropship.transfer.completed": "none: it is known",
	} {
		var out, errOut bytes.Buffer
		err := Run(t.Context(), []string{"events", "-nats", "nats://127.0.0.1:1", "-prefix", "dropship", "-target", "acme", "-type", typ}, &out, &errOut)
		if want == "none: it is known" {
			if err != nil && strings.Contains(err.Error(), "did you mean") {
				t.Errorf("-type %s: %v", typ, err)
			}
			continue
		}
		if exitCode(err) != 2 {
			t.Errorf("-type %s: %v (exit %d), want a usage error", typ, err, exitCode(err))
			continue
		}
		if want == "" {
			if strings.Contains(err.Error(), "did you mean") {
				t.Errorf("-type %s: %v; want no suggestion", typ, err)
			}
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("-type %s: %v; want %q", typ, err, want)
		}
	}
}

// Replayed with -since (here a date and time), an event from another day
// shows its date; one from today only its time.
func TestEventsReplayShowsTheDateOfOlderEvents(t *testing.T) {
	url, bus := startNATS(t)
	old := transferEvent(t, events.TransferCompleted, "old", 1)
	old.Time = time.Now().Add(-50 * time.Hour).Truncate(time.Second)
	recent := transferEvent(t, events.TransferCompleted, "recent", 1)
	publish(t, bus, old, recent)
	since := time.Now().Add(-time.Hour).Format("2006-01-02T15:04")
	r := startEvents(t, nil, "-nats", url, "-prefix", "dropship", "-agent", "edge-01", "-since", since)
	waitFor(t, "the replayed events", func() bool { return strings.Contains(r.stdout.String(), "recent.pdf") })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	out := r.stdout.String()
	if want := old.Time.Local().Format(time.DateTime) + " completed  acme  /srv/drop/acme/old.pdf"; !strings.Contains(out, want) {
		t.Errorf("the event of two days ago: want %q in\n%s", want, out)
	}
	if want := "\n" + recent.Time.Local().Format(time.TimeOnly) + " completed  acme  /srv/drop/acme/recent.pdf"; !strings.Contains("\n"+out, want) {
		t.Errorf("today's event: want %q in\n%s", want, out)
	}
}
