package watcher

import (
	"fmt"
	"path"
	"strings"
)

// alwaysIgnoredSuffixes are the temporary names uploaders and editors use
// while a file is incomplete. They are ignored whatever include says; the
// comparison ignores case.
var alwaysIgnoredSuffixes = []string{".part", ".tmp", ".swp", "~", ".filepart", ".crdownload"}

// ignoredName reports whether a path element is never watched or sent:
// dotfiles and dot-directories (which covers .dropship-sent and uploads
// under a hidden temporary name).
func ignoredName(name string) bool {
	return strings.HasPrefix(name, ".")
}

// ignoredFileName reports whether a file name is one of the always ignored
// temporary names.
func ignoredFileName(name string) bool {
	if ignoredName(name) {
		return true
	}
	for _, s := range alwaysIgnoredSuffixes {
		if len(name) >= len(s) && strings.EqualFold(name[len(name)-len(s):], s) {
			return true
		}
	}
	return false
}

// pattern is one include or exclude glob.
//
// A pattern without a slash matches the base name at any depth, like a
// .gitignore line. A pattern with a slash is anchored at the root and matched
// element by element; a leading "/" or "./" is allowed and means the same.
// Within an element, *, ? and [...] work as in path.Match; an element that is
// exactly "**" matches zero or more elements.
type pattern struct {
	elems []string // anchored patterns
	base  string   // unanchored patterns
}

func compilePattern(raw string) (pattern, error) {
	p := strings.TrimSuffix(raw, "/")
	anchored := strings.Contains(p, "/")
	p = strings.TrimPrefix(strings.TrimPrefix(p, "./"), "/")
	if p == "" {
		return pattern{}, fmt.Errorf("pattern %q: empty", raw)
	}
	elems := strings.Split(p, "/")
	for _, e := range elems {
		if e == "" {
			return pattern{}, fmt.Errorf("pattern %q: empty path element", raw)
		}
		if e == "**" {
			continue
		}
		if _, err := path.Match(e, ""); err != nil {
			return pattern{}, fmt.Errorf("pattern %q: %w", raw, err)
		}
	}
	if !anchored && p != "**" {
		return pattern{base: p}, nil
	}
	return pattern{elems: elems}, nil
}

// match reports whether rel (slash-separated, relative to the root) matches.
func (p pattern) match(rel string) bool {
	if p.elems == nil {
		ok, _ := path.Match(p.base, path.Base(rel))
		return ok
	}
	return matchElems(p.elems, strings.Split(rel, "/"))
}

func matchElems(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for len(pat) > 0 && pat[0] == "**" {
				pat = pat[1:]
			}
			if len(pat) == 0 {
				return true
			}
			for i := range len(name) + 1 {
				if matchElems(pat, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}

// filter decides which files are sent and which folders are entered.
type filter struct {
	include []pattern
	exclude []pattern
	marker  string
}

func newFilter(include, exclude []string, marker string) (*filter, error) {
	f := &filter{marker: marker}
	if len(include) == 0 {
		include = []string{"*"}
	}
	for _, raw := range include {
		p, err := compilePattern(raw)
		if err != nil {
			return nil, fmt.Errorf("include: %w", err)
		}
		f.include = append(f.include, p)
	}
	for _, raw := range exclude {
		p, err := compilePattern(raw)
		if err != nil {
			return nil, fmt.Errorf("exclude: %w", err)
		}
		f.exclude = append(f.exclude, p)
	}
	return f, nil
}

// wantDir reports whether a folder (already known not to be a Skip folder) is
// entered. Folders are entered unless hidden or excluded; include patterns
// apply to files only, since a deep file may match.
func (f *filter) wantDir(rel string) bool {
	if ignoredName(path.Base(rel)) {
		return false
	}
	for _, p := range f.exclude {
		if p.match(rel) {
			return false
		}
	}
	return true
}

// wantFile reports whether a file is sent. Its folders were already checked
// by wantDir on the way down.
func (f *filter) wantFile(rel string) bool {
	if ignoredFileName(path.Base(rel)) || f.isMarker(rel) {
		return false
	}
	for _, p := range f.exclude {
		if p.match(rel) {
			return false
		}
	}
	for _, p := range f.include {
		if p.match(rel) {
			return true
		}
	}
	return false
}

// isMarker reports whether a name is a ready marker (x + marker for some
// non-empty x). Markers are never sent themselves.
func (f *filter) isMarker(rel string) bool {
	if f.marker == "" {
		return false
	}
	base := path.Base(rel)
	return len(base) > len(f.marker) && strings.HasSuffix(base, f.marker)
}

// MatchPattern reports whether rel (slash-separated, below the watch folder)
// matches pattern, with the include and exclude patterns' rules: a pattern
// without "/" matches the base name, one with "/" the whole path, and "**"
// stands for any number of folders. A bad pattern matches nothing.
func MatchPattern(pattern, rel string) bool {
	p, err := compilePattern(pattern)
	return err == nil && p.match(rel)
}

// Ignored reports whether rel (slash-separated) is never sent whatever the
// include patterns say: a dotfile, a file in a dot-folder, or a temporary
// name such as x.part.
func Ignored(rel string) bool {
	elems := strings.Split(rel, "/")
	for _, e := range elems[:len(elems)-1] {
		if ignoredName(e) {
			return true
		}
	}
	return ignoredFileName(elems[len(elems)-1])
}
