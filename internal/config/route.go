package config

import (
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/dropship/dropship/watcher"
)

// Route is a [[watch.route]]: for one target of the watch, which files go
// to it (Match) and under which name (Rename).
//
// Match is a glob on the path below the watch folder (as include takes
// them: "*.csv", "invoices/**/*.pdf"), or a regular expression after "re:"
// ("re:^INV-[0-9]+\.pdf$"); "" matches every file. Rename is a template of the
// path below the target's remote_dir: {name} (the file's name), {stem} (the
// name without its last extension), {ext} (that extension, with its dot),
// {dir} (the folder below the watch folder, "" at its top), {target},
// {date:LAYOUT} (the time the file was queued, in Go's layout: {date:2006-01-02})
// and {{ and }} for braces; "" keeps the path as it is.
type Route struct {
	Target string
	Match  string
	Rename string
	Line   int

	re *regexp.Regexp
}

// Matches reports whether the file rel goes to the route's target.
func (r *Route) Matches(rel string) bool {
	switch {
	case r.Match == "":
		return true
	case r.re != nil:
		return r.re.MatchString(rel)
	case strings.HasPrefix(r.Match, "re:"):
		re, err := regexp.Compile(strings.TrimPrefix(r.Match, "re:"))
		return err == nil && re.MatchString(rel)
	}
	return watcher.MatchPattern(r.Match, rel)
}

// RemoteRel is the path below remote_dir that the file rel, queued at t, is
// delivered under.
func (r *Route) RemoteRel(rel string, t time.Time) (string, error) {
	if r.Rename == "" {
		return rel, nil
	}
	name := path.Base(rel)
	dir := path.Dir(rel)
	if dir == "." {
		dir = ""
	}
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	if stem == "" { // ".profile": a name, not an extension
		stem, ext = name, ""
	}
	var b strings.Builder
	s := r.Rename
	for len(s) > 0 {
		switch {
		case strings.HasPrefix(s, "{{"):
			b.WriteByte('{')
			s = s[2:]
			continue
		case strings.HasPrefix(s, "}}"):
			b.WriteByte('}')
			s = s[2:]
			continue
		case s[0] != '{':
			b.WriteByte(s[0])
			s = s[1:]
			continue
		}
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", fmt.Errorf("rename %q: a { without its }", r.Rename)
		}
		field := s[1:end]
		s = s[end+1:]
		switch {
		case field == "name":
			b.WriteString(name)
		case field == "stem":
			b.WriteString(stem)
		case field == "ext":
			b.WriteString(ext)
		case field == "dir":
			b.WriteString(dir)
		case field == "target":
			b.WriteString(r.Target)
		case strings.HasPrefix(field, "date:"):
			b.WriteString(t.Format(strings.TrimPrefix(field, "date:")))
		default:
			return "", fmt.Errorf("rename %q: unknown placeholder {%s}; use {name}, {stem}, {ext}, {dir}, {target} or {date:2006-01-02}", r.Rename, field)
		}
	}
	if strings.HasPrefix(r.Rename, "/") {
		return "", fmt.Errorf("rename %q makes %q, an absolute path: it must stay below the target's remote_dir", r.Rename, b.String())
	}
	// An empty {dir} at the start leaves a "/" that means the top.
	out := path.Clean(strings.TrimLeft(b.String(), "/"))
	if out == "." || out == ".." || strings.HasPrefix(out, "../") {
		return "", fmt.Errorf("rename %q makes %q for %q, which leaves the target's remote_dir", r.Rename, b.String(), rel)
	}
	return out, nil
}

// check validates the route for a watch sending to targets.
func (r *Route) check(targets []string) error {
	if !containsString(targets, r.Target) {
		return fmt.Errorf("route for target %q, which is not one of the watch's targets (%s)", r.Target, strings.Join(targets, ", "))
	}
	if re, ok := strings.CutPrefix(r.Match, "re:"); ok {
		c, err := regexp.Compile(re)
		if err != nil {
			return fmt.Errorf("match %q: not a regular expression: %v", r.Match, err)
		}
		r.re = c
	} else if r.Match != "" {
		if err := checkGlob(r.Match); err != nil {
			return fmt.Errorf("match: %w", err)
		}
	}
	if r.Rename == "" {
		return nil
	}
	// Tried on example files: an error, an escape, or one name for two
	// files (a template with neither {name} nor {stem}) is refused now.
	at := time.Date(2026, 1, 2, 15, 4, 5, 0, time.Local)
	a, err := r.RemoteRel("in/report.final.csv", at)
	if err != nil {
		return err
	}
	b, err := r.RemoteRel("in/other.txt", at)
	if err != nil {
		return err
	}
	if a == b {
		return fmt.Errorf("rename %q gives every file the same name (%q): include {name} or {stem}", r.Rename, a)
	}
	if _, err := r.RemoteRel("a/b/c/x", at); err != nil {
		return err
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// RouteFor is the route of target in w, or nil (every file, same name).
func (w *Watch) RouteFor(target string) *Route {
	for i := range w.Routes {
		if w.Routes[i].Target == target {
			return &w.Routes[i]
		}
	}
	return nil
}

// TargetsFor are the targets the file rel of w goes to: its targets whose
// route matches it.
func (w *Watch) TargetsFor(rel string) []string {
	var out []string
	for _, t := range w.TargetNames() {
		if r := w.RouteFor(t); r == nil || r.Matches(rel) {
			out = append(out, t)
		}
	}
	return out
}
