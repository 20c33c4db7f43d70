package watcher

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDrop10k drops 10,000 files at once into 1,000 new folders and
// waits until every one was reported, checking each is reported exactly
// once. It reports files/s, from the first write to the last report (so it
// includes the time to create the files and the 200ms settle period), and
// ms-after-last-write: how long after the last write the last file was
// reported (settle plus the watcher's own work).
func BenchmarkDrop10k(b *testing.B) {
	const folders, perFolder = 1000, 10
	const total = folders * perFolder
	data := content(1024)
	var elapsed, tail time.Duration
	for range b.N {
		b.StopTimer()
		root := filepath.Join(b.TempDir(), "root")
		if err := os.Mkdir(root, 0o755); err != nil {
			b.Fatal(err)
		}
		w, err := New(Options{Root: root, Recursive: true, Settle: 200 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		overflows := 0
		errsDone := make(chan struct{})
		go func() {
			defer close(errsDone)
			for err := range w.Errors() {
				if we, ok := err.(*Error); ok && we.Kind == KindOverflow {
					overflows++
				}
			}
		}()
		b.StartTimer()

		start := time.Now()
		for i := range folders {
			dir := filepath.Join(root, fmt.Sprintf("d%04d", i))
			if err := os.Mkdir(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			for j := range perFolder {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d", j)), data, 0o644); err != nil {
					b.Fatal(err)
				}
			}
		}
		lastWrite := time.Now()
		seen := make(map[string]int, total)
		timeout := time.After(2 * time.Minute)
		for len(seen) < total {
			select {
			case f := <-w.Ready():
				seen[f.Rel]++
				if seen[f.Rel] > 1 {
					b.Fatalf("%s reported twice", f.Rel)
				}
				if f.Size != int64(len(data)) {
					b.Fatalf("%s reported with size %d", f.Rel, f.Size)
				}
			case <-timeout:
				b.Fatalf("only %d of %d files reported", len(seen), total)
			}
		}
		elapsed += time.Since(start)
		tail += time.Since(lastWrite)

		b.StopTimer()
		select {
		case f := <-w.Ready():
			b.Fatalf("%s reported again", f.Rel)
		case <-time.After(500 * time.Millisecond):
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		<-errsDone
		if overflows > 0 {
			b.Logf("%d inotify overflows (rescanned)", overflows)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total*b.N)/elapsed.Seconds(), "files/s")
	b.ReportMetric(float64(tail.Milliseconds())/float64(b.N), "ms-after-last-write")
}
