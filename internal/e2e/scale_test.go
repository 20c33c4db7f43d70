package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sshdtest"
)

// TestManyFilesInManyFolders is issue 4's scale case at CI size: 1,000 files
// in 100 folders, created in a staging folder and moved into the watched
// folder at once, all reach the real sshd exactly once, in their folders,
// byte-identical, each with exactly one completed event. (The benchmark
// runs 10,000 files in 1,000 folders.)
func TestManyFilesInManyFolders(t *testing.T) {
	if testing.Short() {
		t.Skip("scale case")
	}
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	e.sshdTarget(srv)
	e.watchFor("sshd")
	e.writeConf()

	c := collect(t, n.url())
	startAgent(t, e.cfg).waitLog(20*time.Second, "agent started")

	const folders, perFolder = 100, 10
	stage := filepath.Join(e.dir, "stage", "batch")
	want := map[string][]byte{}
	for d := range folders {
		for f := range perFolder {
			rel := fmt.Sprintf("d%03d/sub/f%02d.dat", d, f)
			data := fmt.Appendf(nil, "%s %s\n", rel, randomBytes(t, 64+d*f))
			p := filepath.Join(stage, filepath.FromSlash(rel))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, p, data)
			want[rel] = data
		}
	}
	// One rename drops the whole tree into the watched folder at once.
	if err := os.Rename(stage, filepath.Join(e.watch, "batch")); err != nil {
		t.Fatal(err)
	}

	total := folders * perFolder
	eventually(t, 120*time.Second, fmt.Sprintf("%d completed events", total), func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) >= total
	})
	// Every file is there, once, complete, and nothing else is.
	got := map[string]bool{}
	err := filepath.WalkDir(e.remote, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join(e.remote, "batch"), p)
		got[filepath.ToSlash(rel)] = true
		if data, ok := want[filepath.ToSlash(rel)]; !ok || !sameContent(p, data) {
			t.Errorf("unexpected or wrong remote file %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != total {
		t.Errorf("%d files on the remote, want %d", len(got), total)
	}
	for id, evs := range completedPerTransfer(t, c.all()) {
		if len(evs) != 1 {
			t.Errorf("transfer %s has %d completed events", id, len(evs))
		}
	}
	if n := len(completedPerTransfer(t, c.all())); n != total {
		t.Errorf("%d transfers completed, want %d", n, total)
	}
	never(t, 2*time.Second, "a second delivery of any file", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) > total
	})
}
