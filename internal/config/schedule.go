package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Bandwidth units, as bandwidth = "20MiB/s" takes them.
var bandwidthUnits = map[string]int64{
	"B": 1, "KB": 1000, "MB": 1000 * 1000, "GB": 1000 * 1000 * 1000,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
}

// ParseBandwidth reads a rate such as "20MiB/s", "500KB/s" or "1GiB/s" as
// bytes per second; "" is 0 (no limit).
func ParseBandwidth(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	rest, ok := strings.CutSuffix(s, "/s")
	if !ok {
		return 0, fmt.Errorf("%q is not a rate; write it like \"20MiB/s\" or \"500KB/s\" (units B, KB, MB, GB, KiB, MiB, GiB, per second)", s)
	}
	i := strings.IndexFunc(rest, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i <= 0 {
		return 0, fmt.Errorf("%q is not a rate; write it like \"20MiB/s\" or \"500KB/s\" (a number, then B, KB, MB, GB, KiB, MiB or GiB, then /s)", s)
	}
	unit, ok := bandwidthUnits[strings.TrimSpace(rest[i:])]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q; use B, KB, MB, GB, KiB, MiB or GiB, as in \"20MiB/s\"", s, rest[i:])
	}
	n, err := strconv.ParseFloat(rest[:i], 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: the rate must be a number above 0, as in \"20MiB/s\"", s)
	}
	bps := n * float64(unit)
	if bps < 1024 {
		return 0, fmt.Errorf("%q is below 1 KiB/s, too slow to send anything: raise it, or remove bandwidth for no limit", s)
	}
	if bps > 1<<50 {
		return 0, fmt.Errorf("%q is too large; remove bandwidth for no limit", s)
	}
	return int64(bps), nil
}

// Window is a daily time of day range during which a target may start
// sending, in the agent's local time: "22:00-06:00" runs from 22:00 to 06:00
// the next morning. Several ranges are separated by commas. The zero Window
// is always open.
type Window struct {
	spans [][2]int // minutes since midnight: [start, end), end may be ≤ start (over midnight)
	text  string
}

// ParseWindow reads a window such as "22:00-06:00" or
// "12:00-13:00,20:00-23:30"; "" is always open.
func ParseWindow(s string) (Window, error) {
	w := Window{text: s}
	if strings.TrimSpace(s) == "" {
		return Window{}, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		a, b, ok := strings.Cut(part, "-")
		if !ok {
			return Window{}, fmt.Errorf("%q is not a time range; write it like \"22:00-06:00\" (24-hour HH:MM-HH:MM, local time; several separated by commas)", part)
		}
		start, err := minuteOfDay(a)
		if err != nil {
			return Window{}, err
		}
		end, err := minuteOfDay(b)
		if err != nil {
			return Window{}, err
		}
		if start == end {
			return Window{}, fmt.Errorf("%q starts and ends at the same time; to send at any time, remove window", part)
		}
		w.spans = append(w.spans, [2]int{start, end})
	}
	return w, nil
}

func minuteOfDay(s string) (int, error) {
	s = strings.TrimSpace(s)
	t, err := time.Parse("15:04", s)
	if err != nil {
		if s == "24:00" {
			return 24 * 60, nil
		}
		return 0, fmt.Errorf("%q is not a time of day; write it as HH:MM in 24-hour form, like \"06:00\" or \"22:30\"", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

// IsZero says whether w is always open.
func (w Window) IsZero() bool { return len(w.spans) == 0 }

// String is the window as written in the config.
func (w Window) String() string { return w.text }

// Open says whether t falls inside w.
func (w Window) Open(t time.Time) bool {
	if w.IsZero() {
		return true
	}
	m := t.Hour()*60 + t.Minute()
	for _, sp := range w.spans {
		if sp[0] < sp[1] && m >= sp[0] && m < sp[1] {
			return true
		}
		if sp[0] > sp[1] && (m >= sp[0] || m < sp[1]) {
			return true
		}
	}
	return false
}

// NextOpen is the first moment at or after t when w is open (t itself when
// it is open now).
func (w Window) NextOpen(t time.Time) time.Time {
	if w.Open(t) {
		return t
	}
	best := time.Time{}
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	for d := 0; d <= 1; d++ {
		for _, sp := range w.spans {
			at := day.AddDate(0, 0, d).Add(time.Duration(sp[0]) * time.Minute)
			if at.After(t) && (best.IsZero() || at.Before(best)) {
				best = at
			}
		}
	}
	return best
}

// ParseSize reads a size such as "1GiB", "500MB" or "1048576" (bytes).
func ParseSize(s string) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, "B"
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	mult, ok := bandwidthUnits[unit]
	n, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || n <= 0 || n*float64(mult) > 1<<60 {
		return 0, fmt.Errorf("%q is not a size; write it like \"1GiB\" or \"500MB\" (units B, KB, MB, GB, KiB, MiB, GiB)", s)
	}
	return int64(n * float64(mult)), nil
}
