package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzSeeds returns the example file and a few documents that exercise the
// corners of TOML the locator must get right.
func fuzzSeeds(tb testing.TB) []string {
	tb.Helper()
	ex, err := os.ReadFile(filepath.Join("..", "..", "agent.toml.example"))
	if err != nil {
		tb.Fatal(err)
	}
	return []string{
		string(ex),
		"",
		target,
		"[agent]\nname = 1\nnmae = \"x\"\n[[target]]\nport = \"22\"\n",
		"a = \"\"\"\n[b]\nc = 1\n\"\"\"\nd = '''\n'''\n",
		"[[a]]\n[[a.b]]\nx = 1\n[a.c]\ny = [\n 1, # ]\n [2, 3],\n {z = 4},\n]\n",
		"\"quoted.key\" = { a.b = 'x', c = [\"]\"] }\n",
		"target = [{name = \"a\", host = \"h\", user = \"u\"}]\n[[watch]]\npath = \"x\"\ntarget = \"a\"\n",
		"\ufeff[ agent ]\r\nname = \"x\"\r\n",
		"a = \"\\\"\\u0041\"\n\"\\u0041\" = 2\n",
	}
}

// FuzzParse checks that Parse never panics, returns either a config or
// Problems, and gives every problem a line (from 1) inside the document
// and a one-line text.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := Parse(strings.NewReader(src), "fuzz.toml")
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
			if p.Line < 1 || p.Line > lines || p.File != "fuzz.toml" || p.Message == "" || strings.ContainsAny(p.String(), "\r\n") {
				t.Fatalf("bad problem %+v in a document of %d lines", p, lines)
			}
		}
	})
}
