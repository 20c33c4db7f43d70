package config

import (
	"testing"
	"time"
)

func TestRouteRemoteRel(t *testing.T) {
	at := time.Date(2026, 12, 4, 9, 30, 0, 0, time.Local)
	for _, c := range []struct{ rename, rel, want string }{
		{"", "in/a.csv", "in/a.csv"},
		{"{dir}/{stem}-{date:2006-01-02}{ext}", "in/sales.q3.csv", "in/sales.q3-2026-12-04.csv"},
		{"{dir}/{stem}-{date:2006-01-02}{ext}", "top.csv", "top-2026-12-04.csv"},
		{"{target}/{name}", "x/y/z.bin", "backup/z.bin"},
		{"{{{name}}}", "a.txt", "{a.txt}"},
		{"{stem}{ext}.done", ".profile", ".profile.done"},
		{"{dir}/{name}", "$(rm -rf ~)/'q'", "$(rm -rf ~)/'q'"},
	} {
		r := Route{Target: "backup", Rename: c.rename}
		got, err := r.RemoteRel(c.rel, at)
		if err != nil || got != c.want {
			t.Errorf("rename %q of %q = %q, %v; want %q", c.rename, c.rel, got, err, c.want)
		}
	}
}

func TestRouteMatches(t *testing.T) {
	for _, c := range []struct {
		match, rel string
		want       bool
	}{
		{"", "any/thing", true},
		{"*.csv", "deep/down/a.csv", true},
		{"*.csv", "a.txt", false},
		{"invoices/**/*.pdf", "invoices/2026/12/x.pdf", true},
		{"invoices/**/*.pdf", "other/x.pdf", false},
		{"re:^INV-[0-9]+\\.pdf$", "INV-42.pdf", true},
		{"re:^INV-[0-9]+\\.pdf$", "dir/INV-42.pdf", false},
	} {
		r := Route{Target: "t", Match: c.match}
		if err := r.check([]string{"t"}); err != nil {
			t.Fatal(err)
		}
		if got := r.Matches(c.rel); got != c.want {
			t.Errorf("match %q on %q = %v, want %v", c.match, c.rel, got, c.want)
		}
	}
}
