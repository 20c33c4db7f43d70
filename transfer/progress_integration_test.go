package transfer

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
)

// The progress meter of a real sftp is parsed into increasing Progress frames
// and a final one, and reading output stays linear in its size (issue 3
// point 5).

func TestProgressOfALargeUpload(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	// Each 32 KiB write request is held 50 ms, so the 16 MiB take a few
	// seconds and the meter (one frame a second) shows the file in
	// progress.
	_, tg := startSFTPD(t, acct, sftpd.Config{Faults: sftpd.Faults{WriteDelay: 50 * time.Millisecond}})
	tg.Identity = key
	const size = 16 << 20
	remote := t.TempDir()
	items := []Item{
		localItem(t, "small", "small.txt", content("small", 100), remote, "small.txt"),
		localItem(t, "large", "large.bin", content("large", size), remote, "large.bin"),
	}
	rec := &recorder{}
	res := upload(t, newClient(t, tg, Options{Atomic: true}), items, rec.observer())
	wantDelivered(t, items, res)

	frames := rec.progress["large"]
	var middle int
	for i, p := range frames {
		if p.Percent > 0 && p.Percent < 100 {
			middle++
		}
		if i > 0 && (p.Bytes < frames[i-1].Bytes || p.Percent < frames[i-1].Percent) {
			t.Errorf("frame %d went backwards: %+v after %+v", i, p, frames[i-1])
		}
		if p.Final != (i == len(frames)-1) {
			t.Errorf("frame %d of %d: Final = %v", i, len(frames), p.Final)
		}
	}
	if middle < 2 {
		t.Errorf("%d frames in progress, want at least 2: %+v", middle, frames)
	}
	if len(frames) > 0 {
		last := frames[len(frames)-1]
		if last.Percent != 100 || last.Bytes != size {
			t.Errorf("final frame %+v, want 100%% of %d bytes", last, size)
		}
	}
	if f := rec.progress["small"]; len(f) == 0 || !f[len(f)-1].Final {
		t.Errorf("the small file's frames %+v end without a final one", f)
	}
	if t.Failed() {
		t.Logf("output:\n%s", rec.text())
	}
}

// meterFrame is one frame as OpenSSH's meter draws it on a 200-column pty:
// exactly meterWidth bytes.
func meterFrame(i, n int) string {
	pct := i * 100 / n
	eta := fmt.Sprintf("%02d:%02d ETA", (n-i)/60%60, (n-i)%60)
	if i == n {
		eta = "00:42    "
	}
	right := fmt.Sprintf(" %3d%% %4dKB %3d.%dKB/s   %s", pct, i, 100+i%900, i%10, eta)
	return fmt.Sprintf("%-*s%s", meterWidth-len(right), "big file.bin", right)
}

// fakeMeter is the test binary as a client that only draws n meter frames,
// then the final one and a line end.
func fakeMeter(frames string) int {
	n, err := strconv.Atoi(frames)
	if err != nil {
		return 97
	}
	var b strings.Builder
	for i := 0; i <= n; i++ {
		b.WriteString("\r" + meterFrame(i, n))
		if b.Len() > 64<<10 {
			os.Stdout.WriteString(b.String())
			b.Reset()
		}
	}
	b.WriteString("\r\n")
	os.Stdout.WriteString(b.String())
	return 0
}

// runMeter runs the fake meter under a pty and returns the frames parsed.
func runMeter(tb testing.TB, n int) (frames int, last Progress) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := runSession(ctx, sessionSpec{
		prog:         "/usr/bin/env",
		args:         []string{"DROPSHIP_FAKE_METER=" + strconv.Itoa(n), exe, "-test.run=^$"},
		loginTimeout: time.Minute,
		target:       &Target{},
		scrub:        newScrubber(),
		logger:       discard(),
		onFrame: func(p Progress, _ string) {
			frames++
			last = p
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if res.err != nil || res.exitCode != 0 {
		tb.Fatalf("fake meter: %v, exit %d, %q", res.err, res.exitCode, res.lines)
	}
	return frames, last
}

// A megabyte of meter output through the real pty and go-expect: every
// frame is parsed, and it takes seconds (the library's own string matchers
// would take hours: OPENSSH.md §12.6 measured 35 s for 284 KB).
func TestOutputMatchingIsLinear(t *testing.T) {
	t.Parallel()
	const n = 5000 // 1 MB
	start := time.Now()
	frames, last := runMeter(t, n)
	took := time.Since(start)
	t.Logf("%d frames (%.1f MB) in %s", frames, float64(n*(meterWidth+1))/1e6, took)
	if frames != n+1 || !last.Final || last.Percent != 100 || last.Bytes != int64(n)<<10 {
		t.Errorf("%d frames, last %+v; want %d ending in a final 100%% frame", frames, last, n+1)
	}
	if took > 30*time.Second {
		t.Errorf("1 MB of output took %s", took)
	}
}

// BenchmarkTokenizer splits and parses several MB of meter output; its MB/s
// must not fall as the output grows.
func BenchmarkTokenizer(b *testing.B) {
	for _, n := range []int{5000, 20000, 80000} { // 1, 4 and 16 MB
		var out strings.Builder
		for i := 0; i <= n; i++ {
			out.WriteString("\r" + meterFrame(i, n))
		}
		out.WriteString("\r\n")
		data := []byte(out.String())
		b.Run(fmt.Sprintf("%.0fMB", float64(len(data))/1e6), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				frames := 0
				tk := &tokenizer{
					onFrame: func(f string) {
						if _, ok := parseProgress(f); ok {
							frames++
						}
					},
					onLine: func(l string) {
						if _, ok := parseProgress(l); ok {
							frames++
						}
					},
				}
				// Arbitrary read sizes, as from a pty.
				for off := 0; off < len(data); off += 4093 {
					_, _ = tk.Write(data[off:min(off+4093, len(data))])
				}
				tk.Flush()
				if frames != n+1 {
					b.Fatalf("%d frames, want %d", frames, n+1)
				}
			}
		})
	}
}

// BenchmarkSessionOutput is the whole path: a pty, go-expect and the
// tokenizer.
func BenchmarkSessionOutput(b *testing.B) {
	const n = 20000 // 4 MB
	b.SetBytes(int64(n+1) * (meterWidth + 1))
	for b.Loop() {
		if frames, _ := runMeter(b, n); frames != n+1 {
			b.Fatalf("%d frames", frames)
		}
	}
}
