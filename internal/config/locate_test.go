package config

import (
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestLocate(t *testing.T) {
	src := `# comment [not = a table]
top = "value # not a comment"   # 2

[agent]                          # 4
name = 'literal [x]'             # 5
"quoted.key" = 1                 # 6
dotted . sub = 2                 # 7
multi = """                      # 8
[fake]
fake = 1
"""                              # 11
lit = '''
[[fake]]
'''                              # 14
after_strings = true             # 15

[[target]]                       # 17
name = "a"                       # 18
list = [                         # 19
  "x]",  # comment ] [
  [1, 2],                        # 21
  { k = 1 },                     # 22
]                                # 23
[target.sub]                     # 24
key = 1                          # 25

[[target]]                       # 27
name = "b"                       # 28
  [[target.inner]]               # 29
  x = 1                          # 30
  [[target.inner]]               # 31
  x = 2                          # 32

[ "quoted header" . 'part' ]     # 34
k = "\"]"                        # 35
inline = { a = 1, b.c = [ 2 ] }  # 36
escaped = "\u0041\\"             # 37
"\u0041" = 1                     # 38
`
	if _, err := toml.Decode(src, new(map[string]any)); err != nil {
		t.Fatalf("test document is not valid TOML: %v", err)
	}
	loc := locate(src)
	for _, tc := range []struct {
		path string
		line int
	}{
		{"top", 2},
		{"agent", 4},
		{"agent.name", 5},
		{"agent.quoted\x01key", 6},
		{"agent.dotted", 7},
		{"agent.dotted.sub", 7},
		{"agent.multi", 8},
		{"agent.lit", 12},
		{"agent.after_strings", 15},
		{"fake", 0},
		{"target", 17},
		{"target.0", 17},
		{"target.0.name", 18},
		{"target.0.list", 19},
		{"target.0.list.0", 20},
		{"target.0.list.1", 21},
		{"target.0.list.1.1", 21},
		{"target.0.list.2", 22},
		{"target.0.list.2.k", 22},
		{"target.0.sub", 24},
		{"target.0.sub.key", 25},
		{"target.1", 27},
		{"target.1.name", 28},
		{"target.1.inner.0", 29},
		{"target.1.inner.0.x", 30},
		{"target.1.inner.1", 31},
		{"target.1.inner.1.x", 32},
		{"quoted header.part", 34},
		{"quoted header.part.k", 35},
		{"quoted header.part.inline.a", 36},
		{"quoted header.part.inline.b.c.0", 36},
		{"quoted header.part.escaped", 37},
		{"quoted header.part.A", 38},
	} {
		// "." separates path elements here; \x01 stands for a "." inside one.
		path := strings.Split(tc.path, ".")
		for i := range path {
			path[i] = strings.ReplaceAll(path[i], "\x01", ".")
		}
		if got := loc.line(path...); got != tc.line {
			t.Errorf("line of %q = %d, want %d", tc.path, got, tc.line)
		}
	}
}

func TestLocateCRLFAndBOM(t *testing.T) {
	src := "\ufeff[agent]\r\nname = \"x\"\r\n\r\n[nats]\r\nurl = \"\"\r\n"
	loc := locate(src)
	if got := loc.line("agent", "name"); got != 2 {
		t.Errorf("agent.name at line %d, want 2", got)
	}
	if got := loc.line("nats", "url"); got != 5 {
		t.Errorf("nats.url at line %d, want 5", got)
	}
}

// FuzzLocate checks that the locator never panics and that, on every
// document the TOML decoder accepts, it finds a line for every key, table
// and array element, on a line that shows the key.
func FuzzLocate(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		loc := locate(src)
		var doc map[string]any
		if _, err := toml.Decode(src, &doc); err != nil {
			return
		}
		lines := strings.Split(src, "\n")
		walkDoc(nil, doc, func(path []string, index bool) {
			l := loc.line(path...)
			if l < 1 || l > len(lines) {
				t.Fatalf("line of %q = %d; document has %d lines", path, l, len(lines))
			}
			k := path[len(path)-1]
			// A key may be written with escapes: "\u0041" is A.
			if !index && isBareKey(k) && !strings.Contains(lines[l-1], k) && !strings.Contains(lines[l-1], `\`) {
				t.Fatalf("line of %q = %d, which does not show the key: %q", path, l, lines[l-1])
			}
		})
	})
}

func isBareKey(k string) bool {
	return k != "" && strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == ""
}

// walkDoc calls visit for every key and array element under v; index tells
// that the last path element is an array index.
func walkDoc(path []string, v any, visit func(path []string, index bool)) {
	sub := func(k string, index bool, e any) {
		p := append(append([]string(nil), path...), k)
		visit(p, index)
		walkDoc(p, e, visit)
	}
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			sub(k, false, e)
		}
	case []map[string]any:
		for i, e := range x {
			sub(strconv.Itoa(i), true, e)
		}
	case []any:
		for i, e := range x {
			sub(strconv.Itoa(i), true, e)
		}
	}
}
