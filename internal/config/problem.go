package config

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string // the config file as named to Parse or Load
	Line int    // from 1; 0 when the problem has no line
	// Key is the dotted TOML key without array indexes ("target.port"), or
	// the name of an unknown table; empty for a syntax error.
	Key     string
	Message string
}

// String formats p as "file:line: key: message", leaving out the line when
// it is 0 and the key when it is empty.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every problem found in a configuration file, sorted by line.
// Parse and Load return it as their error, so a caller can get at the
// individual problems with errors.As.
type Problems []Problem

// Error returns one problem per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) sort() {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
}

// err returns ps sorted as an error, or nil when there is no problem.
func (ps Problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	ps.sort()
	return ps
}
