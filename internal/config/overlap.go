package config

import (
	"fmt"
	"os"
	"path/filepath"
)

// maxOverlapReports bounds the overlap problems reported for one watch, so
// that a file with thousands of watches of one folder still gets a short
// answer, quickly.
const maxOverlapReports = 5

// overlapping finds the watched folders that overlap: the same folder, or
// one inside the other. For every such pair it calls report on the later
// watch i with why it overlaps the earlier one, at most maxOverlapReports
// times per watch, and only once for several watches of the same folder
// (against the first of them). Empty paths are skipped. It takes time in the
// number of watches times the depth of their paths, never in its square.
func overlapping(paths []string, lines []int, report func(i int, msg string)) {
	at := make(map[string][]int, len(paths)) // folder → watches of it, in order
	for i, p := range paths {
		if p != "" {
			at[p] = append(at[p], i)
		}
	}
	count := make([]int, len(paths))
	add := func(i, j int) { // i > j
		if count[i] < maxOverlapReports {
			count[i]++
			report(i, overlap(paths[i], paths[j], lines[j]))
		}
	}
	for v, p := range paths {
		if p == "" {
			continue
		}
		if first := at[p][0]; first != v {
			add(v, first)
		}
		for q := p; q != filepath.Dir(q); {
			q = filepath.Dir(q)
			for k, u := range at[q] {
				switch {
				case u > v:
					add(u, v)
				case k == 0:
					add(v, u) // inside the first watch of q, not again inside each
				}
			}
		}
	}
}

// watchPlace explains why the folder p cannot be watched with state_dir
// being stateDir, or returns "". Both are clean and absolute, or resolved
// alike.
func watchPlace(p, stateDir string) string {
	switch {
	case p == string(filepath.Separator):
		return "must not be / : every file on the system would be sent; watch a drop folder of its own"
	case p == stateDir:
		return fmt.Sprintf("%s is agent.state_dir, where dropship keeps its journal and keys; watch a folder of its own", p)
	case within(p, stateDir):
		return fmt.Sprintf("%s is inside agent.state_dir %s, where dropship keeps its journal and keys; watch a folder outside it", p, stateDir)
	case within(stateDir, p):
		return fmt.Sprintf("%s contains agent.state_dir %s, so dropship's journal and keys would be sent; watch a folder that does not contain it, or move state_dir out of it", p, stateDir)
	}
	return ""
}

// resolvePath returns p with every symbolic link resolved: EvalSymlinks of
// its longest existing prefix, with the rest appended. It returns "" when
// nothing of p can be resolved.
func resolvePath(p string) string {
	rest := ""
	for q := p; ; q = filepath.Dir(q) {
		if _, err := os.Lstat(q); err == nil {
			r, err := filepath.EvalSymlinks(q)
			if err != nil {
				return ""
			}
			return filepath.Join(r, rest)
		}
		if q == filepath.Dir(q) {
			return ""
		}
		rest = filepath.Join(filepath.Base(q), rest)
	}
}
