package agent

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/journal"
)

// recordOf is the journal record of the file at p as readiness saw it.
func recordOf(t *testing.T, p string) *journal.Record {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return &journal.Record{ID: "01claim", Path: p, Size: fi.Size(), ModTime: fi.ModTime(), Dev: uint64(st.Dev), Inode: st.Ino}
}

// Post-processing moves or deletes only the version that was delivered: a
// file that took its name after delivery stays where it is, untouched,
// whatever moment it arrived.
func TestClaimTakesOnlyTheDeliveredVersion(t *testing.T) {
	a := &Agent{logger: slog.New(slog.DiscardHandler)}
	dir := t.TempDir()
	p := filepath.Join(dir, "report.csv")
	if err := os.WriteFile(p, []byte("delivered"), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := recordOf(t, p)

	// The delivered version is there: claimed, out of the folder's sight.
	hidden, err := a.claim(rec)
	if err != nil {
		t.Fatalf("claim of the delivered version: %v", err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after the claim %s is still there (%v)", p, err)
	}
	if b, err := os.ReadFile(hidden); err != nil || string(b) != "delivered" {
		t.Errorf("the claimed file %s holds %q (%v)", hidden, b, err)
	}
	if filepath.Dir(hidden) != dir || filepath.Base(hidden)[0] != '.' {
		t.Errorf("claimed under %s, want a dot name in %s (the watcher ignores those)", hidden, dir)
	}

	// A newer version renamed over it before post-processing: left alone.
	if err := os.WriteFile(p, []byte("delivered"), 0o644); err != nil {
		t.Fatal(err)
	}
	rec = recordOf(t, p)
	newer := filepath.Join(t.TempDir(), "newer")
	if err := os.WriteFile(newer, []byte("newer, never sent"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	_ = os.Chtimes(newer, later, later)
	if err := os.Rename(newer, filepath.Join(dir, "staged")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "staged"), p); err != nil {
		t.Fatal(err)
	}
	if _, err := a.claim(rec); !errors.Is(err, errNotThisVersion) {
		t.Fatalf("claim of a replaced file: %v, want errNotThisVersion", err)
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "newer, never sent" {
		t.Errorf("the newer version is not back in place: %q (%v)", b, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "report.csv" && e.Name() != filepath.Base(hidden) {
			t.Errorf("left in the folder: %s", e.Name())
		}
	}

	// Gone: nothing to claim.
	if _, err := a.claim(&journal.Record{ID: "01gone", Path: filepath.Join(dir, "gone")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("claim of a missing file: %v, want not-exist", err)
	}
}
