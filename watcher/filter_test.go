package watcher

import (
	"strings"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		rel     string
		want    bool
	}{
		// without a slash: the base name, at any depth
		{"*", "x", true},
		{"*", "a/b/x", true},
		{"*.csv", "a/b/r.csv", true},
		{"*.csv", "a/b/r.csv.gz", false},
		{"tmp", "tmp", true},
		{"tmp", "a/tmp", true},
		{"tmp", "a/tmpx", false},
		{"r?.txt", "a/r1.txt", true},
		{"[ab].txt", "b.txt", true},
		{"[ab].txt", "c.txt", false},
		// with a slash: anchored at the root
		{"a/*.csv", "a/r.csv", true},
		{"a/*.csv", "b/a/r.csv", false},
		{"a/*.csv", "a/b/r.csv", false},
		{"/a/*.csv", "a/r.csv", true},
		{"./a/*.csv", "a/r.csv", true},
		{"./*.csv", "r.csv", true},
		{"./*.csv", "a/r.csv", false},
		{"a/b/", "a/b", true},
		// ** matches zero or more elements
		{"**", "x", true},
		{"**", "a/b/c", true},
		{"**/x", "x", true},
		{"**/x", "a/b/x", true},
		{"**/x", "a/b/y", false},
		{"a/**", "a", true},
		{"a/**", "a/b/c", true},
		{"a/**", "b/a/c", false},
		{"a/**/z", "a/z", true},
		{"a/**/z", "a/b/c/z", true},
		{"a/**/z", "a/b/c/z/y", false},
		{"reports/**/*.xml", "reports/r.xml", true},
		{"reports/**/*.xml", "reports/2024/q1/r.xml", true},
		{"reports/**/*.xml", "other/2024/r.xml", false},
		{"**/private/**", "private", true},
		{"**/private/**", "a/private/p.csv", true},
		{"**/private/**", "a/privateer/p.csv", false},
		{"a/**/**/b", "a/b", true},
		// * never crosses a slash
		{"a/*", "a/b/c", false},
		{"a*/c", "ab/c", true},
	}
	for _, tt := range tests {
		p, err := compilePattern(tt.pattern)
		if err != nil {
			t.Fatalf("compilePattern(%q): %v", tt.pattern, err)
		}
		if got := p.match(tt.rel); got != tt.want {
			t.Errorf("%q matching %q = %v, want %v", tt.pattern, tt.rel, got, tt.want)
		}
	}
}

func TestPatternErrors(t *testing.T) {
	for _, bad := range []string{"", "/", "a//b", "[", "a/[z-a"} {
		if _, err := compilePattern(bad); err == nil {
			t.Errorf("compilePattern(%q) accepted", bad)
		}
	}
	if _, err := New(Options{Root: t.TempDir(), Include: []string{"["}}); err == nil || !strings.Contains(err.Error(), "include") {
		t.Errorf("New with a bad include pattern: %v", err)
	}
}

func TestFilter(t *testing.T) {
	f, err := newFilter([]string{"*.csv", "in/**"}, []string{"skip-*", "**/old/**"}, ".done")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{
		"a.csv":            true,
		"sub/a.csv":        true,
		"a.txt":            false,
		"in/x/y.bin":       true,
		"skip-a.csv":       false,
		"sub/old/a.csv":    false,
		".a.csv":           false, // dotfile
		"a.csv.part":       false,
		"a.csv.PART":       false,
		"a.csv.tmp":        false,
		"a.csv.swp":        false,
		"a.csv~":           false,
		"a.csv.filepart":   false,
		"a.csv.crdownload": false,
		"a.csv.done":       false, // a marker
		"in/x.done":        false,
		".done":            false,
	}
	for rel, want := range files {
		if got := f.wantFile(rel); got != want {
			t.Errorf("wantFile(%q) = %v, want %v", rel, got, want)
		}
	}
	dirs := map[string]bool{
		"sub":      true,
		".hidden":  false,
		"a/.git":   false,
		"skip-me":  false,
		"a/old":    false,
		"a/older":  true,
		"in/a/old": false,
	}
	for rel, want := range dirs {
		if got := f.wantDir(rel); got != want {
			t.Errorf("wantDir(%q) = %v, want %v", rel, got, want)
		}
	}
}

// FuzzPatternMatch feeds arbitrary patterns and file names (file names are
// untrusted input): nothing panics, and "**" and "*" match every name.
func FuzzPatternMatch(f *testing.F) {
	f.Add("a/**/b", "a/x/y/b")
	f.Add("*.csv", "dir/file.csv")
	f.Add("[", "x")
	f.Fuzz(func(t *testing.T, pat, rel string) {
		if p, err := compilePattern(pat); err == nil {
			p.match(rel)
		}
		all, _ := compilePattern("**")
		if rel != "" && !all.match(rel) {
			t.Errorf("** does not match %q", rel)
		}
		star, _ := compilePattern("*")
		if rel != "" && !strings.HasSuffix(rel, "/") && !star.match(rel) && !strings.ContainsAny(rel, "\\") {
			t.Errorf("* does not match %q", rel)
		}
	})
}
