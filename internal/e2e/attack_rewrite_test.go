package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// versions records every version of a file that was written whole.
type versions struct {
	mu    sync.Mutex
	index map[string]int // sha256 → version number (1…)
	sizes map[string]int
	last  string
}

func (v *versions) add(data []byte) string {
	sum := sha256Hex(data)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.index[sum] = len(v.index) + 1
	v.sizes[sum] = len(data)
	v.last = sum
	return sum
}

func (v *versions) has(sum string) (int, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	i, ok := v.index[sum]
	return i, ok
}

// TestAttackRewrite rewrites a file 100 times while it is being sent, with
// random content and size each time, in place (truncated or overwritten) and
// by renaming a new file over it, with pauses shorter and longer than the
// settle, and right after its transfers start; once to a real sshd (8 MiB)
// and once to the built-in server slowed down (1 MiB). The remote final name
// must only ever hold a version that existed whole (sampled throughout, and
// at the end), every completed event must describe such a version (its
// sha256 and size), and the file must end with the remote holding the last
// version and a completed event saying so (or a failed event of class
// local-changed or local-file), never a mix.
func TestAttackRewrite(t *testing.T) {
	forEachAgentUser(t, testAttackRewrite)
}

func testAttackRewrite(t *testing.T, u *agentUser) {
	rnd := &lockedRand{r: newRand(t)}
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newAttackEnv(t, u)
	n := e.externalNATS()
	slowRemote := filepath.Join(e.remote, "slow")
	fastRemote := filepath.Join(e.remote, "sshd")
	for _, d := range []string{slowRemote, fastRemote} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const password = "Q#7vZ%k2W^m9X~p4"
	slow, err := sftpd.New(sftpd.Config{
		Listen: "127.0.0.1:0",
		Home:   slowRemote,
		Users:  map[string]sftpd.Account{"alice": {Password: password}},
		Faults: sftpd.Faults{WriteDelay: 15 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("start sftpd: %v", err)
	}
	t.Cleanup(func() { _ = slow.Close() })
	e.sshdKeyTarget("sshd", srv, fastRemote)
	e.sftpdPasswordTarget("slow", slow.Port(), slow.HostKeyFingerprint(), "alice", password, slowRemote)
	slowWatch := filepath.Join(e.dir, "drop-slow")
	e.watchFolder(e.watch, "sshd")
	e.watchFolder(slowWatch, "slow")
	e.writeConf()

	c := collect(t, n.url())
	tr := track(t, n.url())
	agent := e.startAgent()

	type subject struct {
		name         string
		local, final string
		size         int
		v            *versions
	}
	subjects := []*subject{
		{name: "sshd", local: filepath.Join(e.watch, "rewritten.bin"), final: filepath.Join(fastRemote, "rewritten.bin"), size: 8 << 20},
		{name: "slow", local: filepath.Join(slowWatch, "rewritten.bin"), final: filepath.Join(slowRemote, "rewritten.bin"), size: 1 << 20},
	}
	stop := make(chan struct{})
	var samplers sync.WaitGroup
	var mixMu sync.Mutex
	mixes := map[string]string{} // sha256 of remote content that was never a version → what
	for _, s := range subjects {
		s.v = &versions{index: map[string]int{}, sizes: map[string]int{}}
		// Sample the remote final name all along.
		samplers.Add(1)
		go func() {
			defer samplers.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(40 * time.Millisecond):
				}
				b, err := os.ReadFile(s.final)
				if err != nil {
					continue
				}
				sum := sha256Hex(b)
				if _, ok := s.v.has(sum); !ok {
					mixMu.Lock()
					mixes[sum] = fmt.Sprintf("%s: the remote %s held %d bytes (sha256 %s) at %s: never a whole version", s.name, s.final, len(b), short(sum), time.Now().Format("15:04:05.000"))
					mixMu.Unlock()
				}
			}
		}()
	}

	begin := time.Now()
	var writers sync.WaitGroup
	midTransfer := map[string]int{}
	var midMu sync.Mutex
	for _, s := range subjects {
		writers.Add(1)
		go func() {
			defer writers.Done()
			tmp := filepath.Join(e.stage, s.name+".next")
			for k := range 100 {
				size := s.size/2 + rnd.intN(s.size/2+1)
				data := rnd.bytes(size)
				s.v.add(data)
				inFlight := func() bool {
					evs := tr.of(s.local)
					return len(evs) > 0 && evs[len(evs)-1].state == events.TransferStarted
				}
				if inFlight() {
					midMu.Lock()
					midTransfer[s.name]++
					midMu.Unlock()
				}
				switch rnd.intN(3) {
				case 0: // in place, truncated, in a few writes
					f, err := os.OpenFile(s.local, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
					if err != nil {
						t.Error(err)
						return
					}
					for off := 0; off < len(data); off += len(data)/3 + 1 {
						if _, err := f.Write(data[off:min(len(data), off+len(data)/3+1)]); err != nil {
							t.Error(err)
						}
						time.Sleep(time.Millisecond)
					}
					f.Close()
				case 1: // in place, overwritten from the start, then cut to size
					f, err := os.OpenFile(s.local, os.O_WRONLY|os.O_CREATE, 0o644)
					if err != nil {
						t.Error(err)
						return
					}
					if _, err := f.WriteAt(data, 0); err != nil {
						t.Error(err)
					}
					if err := f.Truncate(int64(len(data))); err != nil {
						t.Error(err)
					}
					f.Close()
				default: // a new file renamed over it
					writeFile(t, tmp, data)
					if err := os.Rename(tmp, s.local); err != nil {
						t.Error(err)
						return
					}
				}
				if k == 99 {
					break
				}
				switch r := rnd.intN(100); {
				case r < 70:
					time.Sleep(rnd.between(5*time.Millisecond, 80*time.Millisecond))
				case r < 88:
					time.Sleep(rnd.between(350*time.Millisecond, 600*time.Millisecond)) // longer than settle: it gets sent
				default:
					// Right after the next attempt starts.
					n := len(tr.of(s.local))
					deadline := time.Now().Add(time.Second)
					for time.Now().Before(deadline) {
						evs := tr.of(s.local)
						if len(evs) > n && evs[len(evs)-1].state == events.TransferStarted {
							break
						}
						time.Sleep(5 * time.Millisecond)
					}
					time.Sleep(rnd.between(0, 150*time.Millisecond))
				}
			}
		}()
	}
	writers.Wait()
	t.Logf("100 rewrites of each file in %s; rewrites while a transfer was running (started, not ended): %v", time.Since(begin).Round(time.Millisecond), midTransfer)

	// The last version is stable now: it must arrive, with its completed
	// event, or the file must have been failed.
	for _, s := range subjects {
		last := s.v.last
		done := func() bool {
			evs := tr.of(s.local)
			if len(evs) == 0 {
				return false
			}
			ev := evs[len(evs)-1]
			switch ev.state {
			case events.TransferFailed:
				return true
			case events.TransferCompleted:
				return ev.data.SHA256 == last && sha256File(s.final) == last
			}
			return false
		}
		deadline := time.Now().Add(30 * time.Second)
		for !done() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if !done() {
			i, ok := s.v.has(sha256File(s.final))
			t.Errorf("%s: the last version (sha256 %s) was not delivered: the remote holds %s (version %d, a whole version: %v); events %s",
				s.name, short(last), short(sha256File(s.final)), i, ok, states(tr.of(s.local)))
		}
	}
	close(stop)
	samplers.Wait()
	tr.quiet(time.Second, 10*time.Second)

	for _, s := range subjects {
		evs := tr.of(s.local)
		var lastCompleted string
		for _, ev := range evs {
			if ev.state == events.TransferFailed && ev.class() != "local-changed" && ev.class() != "local-file" {
				t.Errorf("%s: failed with class %q, want local-changed or local-file", s.name, ev.class())
			}
			if ev.state != events.TransferCompleted {
				continue
			}
			lastCompleted = ev.data.SHA256
			i, ok := s.v.has(ev.data.SHA256)
			switch {
			case !ok:
				t.Errorf("%s: a completed event describes content that never existed whole (sha256 %s, %d bytes): a mix of versions", s.name, short(ev.data.SHA256), ev.data.SizeBytes)
			case int64(s.v.sizes[ev.data.SHA256]) != ev.data.SizeBytes:
				t.Errorf("%s: completed event of version %d says %d bytes, the version has %d", s.name, i, ev.data.SizeBytes, s.v.sizes[ev.data.SHA256])
			}
		}
		final := sha256File(s.final)
		if final != "" {
			if i, ok := s.v.has(final); !ok {
				t.Errorf("%s: the remote final name holds content (sha256 %s) that never existed whole locally: a mix of versions", s.name, short(final))
			} else if final != lastCompleted {
				t.Errorf("%s: the remote final name holds version %d (sha256 %s), the last completed event says %s", s.name, i, short(final), short(lastCompleted))
			}
		}
		n := 0
		for _, ev := range evs {
			if ev.state == events.TransferCompleted {
				n++
			}
		}
		t.Logf("%s: %d versions written, %d lifecycle events, %d completed", s.name, len(s.v.index), len(evs), n)
	}
	for _, m := range mixes {
		t.Error(m)
	}
	_ = c
	_ = agent
}
