package watcher

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCloseDuringFirstScan: New returns before the first scan of a large
// tree is over, and Close stops that scan within a second.
func TestCloseDuringFirstScan(t *testing.T) {
	root := t.TempDir()
	const dirs, files = 200, 250 // 50,000 files
	for i := range dirs {
		d := filepath.Join(root, fmt.Sprintf("d%03d", i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range files {
			f, err := os.Create(filepath.Join(d, fmt.Sprintf("f%03d", j)))
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
	start := time.Now()
	w, err := New(Options{Root: root, Recursive: true, Settle: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("New took %v: it waited for the first scan", d)
	}
	select {
	case <-w.scanned:
		t.Log("the first scan was over before Close; the machine is fast")
	default:
	}
	closed := make(chan struct{})
	start = time.Now()
	go func() {
		w.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Logf("closed in %v", time.Since(start))
	case <-time.After(time.Second):
		t.Fatal("Close during the first scan took more than a second")
	}
}
