package watcher

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewRejects(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"relative root", Options{Root: "drop"}, "absolute"},
		{"missing root", Options{Root: filepath.Join(dir, "missing")}, "create the folder"},
		{"root is a file", Options{Root: file}, "not a folder"},
		{"negative settle", Options{Root: dir, Settle: -time.Second}, "negative"},
		{"bad exclude", Options{Root: dir, Exclude: []string{"a/[z-"}}, "exclude"},
		{"marker with slash", Options{Root: dir, ReadyMarker: "x/done"}, "slash"},
	}
	for _, tt := range tests {
		w, err := New(tt.opts)
		if err == nil {
			w.Close()
			t.Errorf("%s: New accepted %+v", tt.name, tt.opts)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q does not say %q", tt.name, err, tt.want)
		}
	}
}

// TestClose: Close is idempotent and safe from several goroutines, both
// channels are closed afterwards, and Rescan after Close is harmless.
func TestClose(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := New(Options{Root: root, Settle: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads Ready or Errors: Close must not hang on them.
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}()
	}
	wg.Wait()
	w.Rescan()
	deadline := time.After(5 * time.Second)
	for _, name := range []string{"Ready", "Errors"} {
		for closed := false; !closed; {
			select {
			case _, ok := <-w.Ready():
				if name == "Ready" {
					closed = !ok
				}
			case _, ok := <-w.Errors():
				if name == "Errors" {
					closed = !ok
				}
			case <-deadline:
				t.Fatalf("%s not closed after Close", name)
			}
		}
	}
}

func TestErrorKinds(t *testing.T) {
	e := &Error{Kind: KindWatchLimit, Path: "/srv/drop/a", Msg: "inotify watch limit reached"}
	if got := e.Error(); !strings.Contains(got, "/srv/drop/a") || !strings.Contains(got, "watch limit") {
		t.Errorf("Error() = %q", got)
	}
	for k := KindOverflow; k <= KindInternal; k++ {
		if strings.HasPrefix(k.String(), "kind(") {
			t.Errorf("kind %d has no name", k)
		}
	}
}
