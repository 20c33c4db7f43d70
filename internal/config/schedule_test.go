package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseBandwidth(t *testing.T) {
	for in, want := range map[string]int64{
		"":          0,
		"20MiB/s":   20 << 20,
		"500KB/s":   500_000,
		"1.5GiB/s":  3 << 29,
		"2048B/s":   2048,
		"10 MiB/s":  10 << 20,
		"0.25MiB/s": 1 << 18,
	} {
		got, err := ParseBandwidth(in)
		if err != nil || got != want {
			t.Errorf("ParseBandwidth(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, quote := range map[string]string{
		"20MiB":   `"20MiB/s"`,
		"20Mb/s":  "unknown unit",
		"fast/s":  "a number",
		"0MiB/s":  "above 0",
		"100B/s":  "below 1 KiB/s",
		"-1KiB/s": "a number",
	} {
		if _, err := ParseBandwidth(in); err == nil || !strings.Contains(err.Error(), quote) {
			t.Errorf("ParseBandwidth(%q): error %v, want one saying %q", in, err, quote)
		}
	}
}

func TestWindow(t *testing.T) {
	at := func(hm string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", "2026-12-04 "+hm, time.Local)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	night, err := ParseWindow("22:00-06:00")
	if err != nil {
		t.Fatal(err)
	}
	for hm, open := range map[string]bool{"21:59": false, "22:00": true, "23:59": true, "00:00": true, "05:59": true, "06:00": false, "12:00": false} {
		if got := night.Open(at(hm)); got != open {
			t.Errorf("22:00-06:00 at %s: open %v, want %v", hm, got, open)
		}
	}
	if got, want := night.NextOpen(at("12:00")), at("22:00"); !got.Equal(want) {
		t.Errorf("22:00-06:00 from 12:00 opens %v, want %v", got, want)
	}
	if got := night.NextOpen(at("23:00")); !got.Equal(at("23:00")) {
		t.Errorf("22:00-06:00 is open at 23:00, NextOpen says %v", got)
	}
	two, err := ParseWindow("12:00-13:00, 20:00-24:00")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := two.NextOpen(at("13:30")), at("20:00"); !got.Equal(want) {
		t.Errorf("from 13:30 opens %v, want %v", got, want)
	}
	if got, want := two.NextOpen(at("08:00")), at("12:00"); !got.Equal(want) {
		t.Errorf("from 08:00 opens %v, want %v", got, want)
	}
	if !two.Open(at("23:59")) || two.Open(at("00:30")) {
		t.Error("20:00-24:00 must include 23:59 and not 00:30")
	}
	if next := two.NextOpen(at("23:59").Add(59 * time.Second)); next.IsZero() {
		t.Error("NextOpen never zero for a window with spans")
	}
	var always Window
	if !always.Open(at("03:00")) || !always.NextOpen(at("03:00")).Equal(at("03:00")) {
		t.Error("the zero window must always be open")
	}
	for in, quote := range map[string]string{
		"22-06":       "HH:MM",
		"22:00":       "time range",
		"25:00-06:00": "time of day",
		"06:00-06:00": "same time",
	} {
		if _, err := ParseWindow(in); err == nil || !strings.Contains(err.Error(), quote) {
			t.Errorf("ParseWindow(%q): error %v, want one saying %q", in, err, quote)
		}
	}
}
