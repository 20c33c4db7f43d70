package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// adversarial returns documents of up to 1 MiB built to make a parser slow:
// deep nesting, huge strings and keys, many tables, keys and elements.
func adversarial() []struct{ name, src string } {
	const deep = 100000
	many := func(n int, f func(b *strings.Builder, i int)) string {
		var b strings.Builder
		for i := range n {
			f(&b, i)
		}
		return b.String()
	}
	return []struct{ name, src string }{
		{"nested arrays", "a = " + strings.Repeat("[", deep) + strings.Repeat("]", deep) + "\n"},
		{"unclosed arrays", "a = " + strings.Repeat("[", deep) + "\n"},
		{"nested inline tables", "a = " + strings.Repeat("{b=", deep) + "1" + strings.Repeat("}", deep) + "\n"},
		{"mixed nesting", "a = " + strings.Repeat("[{b=", deep/2) + "1" + strings.Repeat("}]", deep/2) + "\n"},
		{"nesting in ssh_options", "[[target]]\nname=\"a\"\nhost=\"h\"\nuser=\"u\"\nssh_options = " + strings.Repeat("[", deep) + "\n"},
		{"dotted key", "a" + strings.Repeat(".a", deep) + " = 1\n"},
		{"dotted header", "[a" + strings.Repeat(".a", deep) + "]\n"},
		{"1 MiB string", "[agent]\nname = \"" + strings.Repeat("x", 1<<20) + "\"\n"},
		{"1 MiB key", "\"" + strings.Repeat("k", 1<<20) + "\" = 1\n"},
		{"1 MiB target names", "[[target]]\nname = \"" + strings.Repeat("a", 1<<19) + "\"\n[[watch]]\npath = \"/\"\ntarget = \"" + strings.Repeat("b", 1<<19) + "\"\n"},
		{"1 MiB multi-line string", "a = \"\"\"\n" + strings.Repeat("[{\n", 1<<18) + "\"\"\"\n"},
		{"many watches", many(50000, func(b *strings.Builder, i int) { b.WriteString("[[watch]]\npath=\"x\"\n") })},
		{"many distinct watches", many(maxTables-1, func(b *strings.Builder, i int) {
			fmt.Fprintf(b, "[[watch]]\npath=\"/d/%d\"\ntarget=\"t\"\nfailed_dir=\"/d\"\n", i)
		})},
		{"many tables", many(60000, func(b *strings.Builder, i int) { fmt.Fprintf(b, "[t%d]\n", i) })},
		{"many keys", many(90000, func(b *strings.Builder, i int) { fmt.Fprintf(b, "k%d=1\n", i) })},
		{"keys at the limit", many(maxItems, func(b *strings.Builder, i int) { fmt.Fprintf(b, "k%d=1\n", i) })},
		{"unknown tables at the limit", many(maxTables, func(b *strings.Builder, i int) { fmt.Fprintf(b, "[t%d]\nk=1\n", i) })},
		{"many dotted keys", many(60000, func(b *strings.Builder, i int) { fmt.Fprintf(b, "a.b%d.c=1\n", i) })},
		{"many elements", "a = [" + strings.Repeat("1,", 500000) + "]\n"},
		{"many nested elements", "a = [" + strings.Repeat("[[1]],", 100000) + "]\n"},
	}
}

// finishes fails t unless f returns within limit. The promise is far less
// (under a second for any file under 1 MiB); the bound is generous for slow
// machines and the race detector.
func finishes(t *testing.T, name string, limit time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		t.Logf("%s: %v", name, time.Since(start).Round(time.Millisecond))
	case <-time.After(limit):
		t.Fatalf("%s: not done after %v", name, limit)
	}
}

func TestAdversarialFast(t *testing.T) {
	dir := t.TempDir()
	for _, c := range adversarial() {
		if len(c.src) > 1<<20+64 {
			t.Fatalf("%s: %d bytes, more than 1 MiB", c.name, len(c.src))
		}
		file := filepath.Join(dir, "agent.toml")
		if err := os.WriteFile(file, []byte(c.src), 0o644); err != nil {
			t.Fatal(err)
		}
		var err error
		finishes(t, c.name, 5*time.Second, func() { _, err = Load(file) })
		var probs Problems
		if err != nil && !errors.As(err, &probs) {
			t.Errorf("%s: Load = %v, want Problems", c.name, err)
		}
	}
}

func TestNestingLimit(t *testing.T) {
	tests := []struct {
		name, src string
		line      int
		want      string // "" for no shape problem
	}{
		{"arrays at the limit", "a = " + strings.Repeat("[", maxNesting) + strings.Repeat("]", maxNesting), 0, ""},
		{"arrays over the limit", "x = 1\na = " + strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1), 2, "nesting deeper than 32"},
		{"arrays over lines", "a = [\n[\n" + strings.Repeat("[", maxNesting), 3, "nesting deeper than 32"},
		{"inline tables", "a = " + strings.Repeat("{b=", maxNesting+1), 1, "nesting deeper than 32"},
		{"dotted key", "\n\na" + strings.Repeat(".a", maxNesting) + " = 1", 3, "nesting deeper than 32"},
		{"dotted header", "[a" + strings.Repeat(".a", maxNesting) + "]", 1, "nesting deeper than 32"},
		{"dots in values", "a = 1.5\nb = \"" + strings.Repeat(".", 100) + "\"\nc = " + strings.Repeat("1.0,", 1), 0, ""},
		{"brackets in strings", "a = \"" + strings.Repeat("[", 100) + "\"\nb = '" + strings.Repeat("{", 100) + "'\nc = \"\"\"\n" + strings.Repeat("[", 100) + "\n\"\"\"\n# " + strings.Repeat("[", 100), 0, ""},
		{"line after multi-line string", "a = '''\n\n'''\nb = " + strings.Repeat("[", maxNesting+1), 4, "nesting deeper than 32"},
		{"too many tables", strings.Repeat("[[watch]]\n", maxTables+1), maxTables + 1, "more than 2000 tables"},
		{"tables at the limit", strings.Repeat("[[a]]\n", maxTables), 0, ""},
		{"too many elements", "a = [" + strings.Repeat("1,", maxItems+1) + "]", 1, "more than 20000 keys and array elements"},
	}
	for _, tt := range tests {
		line, msg := checkShape(tt.src)
		if tt.want == "" {
			if msg != "" {
				t.Errorf("%s: checkShape = %d, %q; want no problem", tt.name, line, msg)
			}
			continue
		}
		if line != tt.line || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: checkShape = %d, %q; want line %d, %q", tt.name, line, msg, tt.line, tt.want)
		}
	}
}

func TestNestingProblem(t *testing.T) {
	src := "[agent]\nname = \"a\"\n[[target]]\nssh_options = " + strings.Repeat("[", 1000)
	_, err := Parse(strings.NewReader(src), "agent.toml")
	want := "agent.toml:4: nesting deeper than 32"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Parse = %v; want %q", err, want)
	}
}

// FuzzLoad checks that Load never panics and finishes quickly, and that
// every problem it reports has a line inside the document.
func FuzzLoad(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Add("a = " + strings.Repeat("[", 40) + strings.Repeat("]", 40))
	f.Add("a" + strings.Repeat(".a", 40) + " = 1")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, src string) {
		file := filepath.Join(dir, "agent.toml")
		if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		cfg, err := Load(file)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Load took %v on %d bytes", d, len(src))
		}
		if err == nil {
			if cfg == nil {
				t.Fatal("no config and no error")
			}
			return
		}
		var probs Problems
		if !errors.As(err, &probs) || len(probs) == 0 {
			t.Fatalf("error is not Problems: %v", err)
		}
		lines := strings.Count(src, "\n") + 1
		for _, p := range probs {
			if p.Line < 0 || p.Line > lines || p.Message == "" || strings.ContainsAny(p.String(), "\r\n") {
				t.Fatalf("bad problem %+v in a document of %d lines", p, lines)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	ex, err := os.ReadFile(filepath.Join("..", "..", "agent.toml.example"))
	if err != nil {
		b.Fatal(err)
	}
	cases := append([]struct{ name, src string }{{"example", string(ex)}}, adversarial()...)
	for _, c := range cases {
		b.Run(strings.ReplaceAll(c.name, " ", "_"), func(b *testing.B) {
			b.SetBytes(int64(len(c.src)))
			for b.Loop() {
				_, _ = Parse(strings.NewReader(c.src), "agent.toml")
			}
		})
	}
}
