package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// sinceFlag is the value of `events -since`: how far back to replay, as a
// duration ("90m", "1h30m", "1d", "2d12h") or a point in time ("2026-12-01",
// "2026-12-01T10:00", "2026-12-01 10:00:05", RFC 3339 "2026-12-01T10:00:00Z").
// Dates and times without a zone are local time. It implements flag.Value.
type sinceFlag struct {
	text  string    // as given
	start time.Time // replay events from this time on; zero: no replay
	now   func() time.Time
}

func (s *sinceFlag) String() string { return s.text }

func (s *sinceFlag) Set(v string) error {
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	start, err := parseSince(v, now())
	if err != nil {
		return err
	}
	s.text, s.start = v, start
	return nil
}

// duration is how far back the replay goes, measured now.
func (s *sinceFlag) duration() time.Duration {
	if s.start.IsZero() {
		return 0
	}
	return max(time.Since(s.start), time.Nanosecond)
}

// sinceLayouts are the dates and times -since takes, besides RFC 3339.
var sinceLayouts = []string{
	"2006-01-02",
	"2006-01-02T15:04",
	"2006-01-02T15:04:05",
	"2006-01-02 15:04",
	"2006-01-02 15:04:05",
}

// days matches a leading number of days: "1d", "1.5d", "2d12h".
var days = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)d(.*)$`)

// parseSince returns the time -since v means at now.
func parseSince(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, errors.New("empty: give a duration such as 1h or 2d, or a date such as 2026-12-01")
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return past(t, now)
	}
	for _, layout := range sinceLayouts {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return past(t, now)
		}
	}
	d, err := parseDays(v)
	if err != nil {
		return time.Time{}, errors.New("neither a duration (90m, 1h30m, 2d) nor a date (2026-12-01, 2026-12-01T10:00, RFC 3339)")
	}
	if d <= 0 {
		return time.Time{}, errors.New("the duration must be positive")
	}
	return now.Add(-d), nil
}

// parseDays is time.ParseDuration that also takes days ("d", 24 hours) in
// front: "2d", "1d12h".
func parseDays(v string) (time.Duration, error) {
	m := days.FindStringSubmatch(v)
	if m == nil {
		return time.ParseDuration(v)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, err
	}
	d := time.Duration(n * float64(24*time.Hour))
	if m[2] != "" {
		rest, err := time.ParseDuration(m[2])
		if err != nil || rest < 0 {
			return 0, fmt.Errorf("bad duration %q", v)
		}
		d += rest
	}
	return d, nil
}

func past(t, now time.Time) (time.Time, error) {
	if t.After(now) {
		return time.Time{}, errors.New("that is in the future")
	}
	return t, nil
}
