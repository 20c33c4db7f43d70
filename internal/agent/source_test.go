package agent

import (
	"slices"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
)

// What a listing fetches, listing after listing.
func TestReadyToFetch(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	l := func(rel string, size int64, mt time.Time) transfer.Listed {
		return transfer.Listed{Rel: rel, Size: size, ModTime: mt}
	}
	src := func(edit func(*config.Source)) *config.Source {
		s := config.DefaultSource()
		s.Conn.Name = "customer"
		if edit != nil {
			edit(&s)
		}
		return &s
	}
	rels := func(ls []transfer.Listed) []string {
		var out []string
		for _, x := range ls {
			out = append(out, x.Rel)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		name  string
		src   *config.Source
		prev  []transfer.Listed // nil: the first listing
		now   []transfer.Listed
		known map[string]journal.Fetched
		want  []string
	}{
		{name: "the first listing fetches nothing", src: src(nil),
			now: []transfer.Listed{l("a.csv", 10, old)}},
		{name: "unchanged across two listings", src: src(nil),
			prev: []transfer.Listed{l("a.csv", 10, old)}, now: []transfer.Listed{l("a.csv", 10, old)}, want: []string{"a.csv"}},
		{name: "grown since the last listing: still being uploaded", src: src(nil),
			prev: []transfer.Listed{l("a.csv", 10, old)}, now: []transfer.Listed{l("a.csv", 20, old)}},
		{name: "touched since the last listing", src: src(nil),
			prev: []transfer.Listed{l("a.csv", 10, old)}, now: []transfer.Listed{l("a.csv", 10, old.Add(time.Second))}},
		{name: "the very version fetched before", src: src(nil),
			prev: []transfer.Listed{l("a.csv", 10, old)}, now: []transfer.Listed{l("a.csv", 10, old)},
			known: map[string]journal.Fetched{"a.csv": {Rel: "a.csv", Size: 10, ModTime: old}}},
		{name: "a new version of a file fetched before", src: src(nil),
			prev: []transfer.Listed{l("a.csv", 11, old)}, now: []transfer.Listed{l("a.csv", 11, old)},
			known: map[string]journal.Fetched{"a.csv": {Rel: "a.csv", Size: 10, ModTime: old}}, want: []string{"a.csv"}},
		{name: "dotfiles and temporary names never", src: src(nil),
			prev: []transfer.Listed{l(".hidden", 1, old), l("x.part", 1, old), l(".tmp/a", 1, old), l("b~", 1, old)},
			now:  []transfer.Listed{l(".hidden", 1, old), l("x.part", 1, old), l(".tmp/a", 1, old), l("b~", 1, old)}},
		{name: "include and exclude", src: src(func(s *config.Source) { s.Include = []string{"*.csv", "in/**/*.pdf"}; s.Exclude = []string{"skip*"} }),
			prev: []transfer.Listed{l("a.csv", 1, old), l("skip.csv", 1, old), l("a.txt", 1, old), l("in/x/y.pdf", 1, old)},
			now:  []transfer.Listed{l("a.csv", 1, old), l("skip.csv", 1, old), l("a.txt", 1, old), l("in/x/y.pdf", 1, old)},
			want: []string{"a.csv", "in/x/y.pdf"}},
		{name: "a ready marker: only with it, and never the marker", src: src(func(s *config.Source) { s.ReadyMarker = ".done" }),
			prev: []transfer.Listed{l("a.csv", 1, old), l("a.csv.done", 0, old), l("b.csv", 1, old)},
			now:  []transfer.Listed{l("a.csv", 1, old), l("a.csv.done", 0, old), l("b.csv", 1, old)},
			want: []string{"a.csv"}},
		{name: "min_age", src: src(func(s *config.Source) { s.MinAge = 10 * time.Minute }),
			prev: []transfer.Listed{l("young", 1, now.Add(-time.Minute)), l("old", 1, old)},
			now:  []transfer.Listed{l("young", 1, now.Add(-time.Minute)), l("old", 1, old)},
			want: []string{"old"}},
		{name: "max_age", src: src(func(s *config.Source) { s.MaxAge = 30 * time.Minute }),
			prev: []transfer.Listed{l("recent", 1, now.Add(-time.Minute)), l("ancient", 1, old)},
			now:  []transfer.Listed{l("recent", 1, now.Add(-time.Minute)), l("ancient", 1, old)},
			want: []string{"recent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prev map[string]transfer.Listed
			if tc.prev != nil {
				_, prev = readyToFetch(tc.src, tc.prev, nil, nil, now)
			}
			ready, listed := readyToFetch(tc.src, tc.now, prev, tc.known, now)
			if got := rels(ready); !slices.Equal(got, tc.want) {
				t.Errorf("ready %q, want %q", got, tc.want)
			}
			if len(listed) != len(tc.now) {
				t.Errorf("the listing kept %d of %d entries", len(listed), len(tc.now))
			}
		})
	}
}
