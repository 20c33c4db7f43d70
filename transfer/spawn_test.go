package transfer

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// A client must outlive any OS thread of the agent: Pdeathsig follows the
// forking thread, and a goroutine that locks its thread and ends takes the
// thread with it. The spawner forks from a thread that never exits, so a
// client survives such threads ending while it runs (before the spawner,
// the shared ssh connection died this way when a hashing goroutine ended).
//
// Not parallel: ending threads would also kill processes other tests fork
// outside the spawner (sshdtest's sshd has a Pdeathsig of its own).
func TestClientsSurviveThreadsEnding(t *testing.T) {
	target := &Target{Name: "t"}
	done := make(chan sessionResult, 1)
	go func() {
		res, err := runSession(context.Background(), sessionSpec{
			prog:         "/bin/sleep",
			args:         []string{"1.5"},
			loginTimeout: time.Minute,
			target:       target,
			scrub:        newScrubber(),
			logger:       discard(),
		})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	// End many threads, among them (without the spawner) likely the one
	// that forked sleep.
	for range 20 {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
				time.Sleep(time.Millisecond)
			}()
		}
		wg.Wait()
		time.Sleep(20 * time.Millisecond)
	}
	res := <-done
	if res.exitCode != 0 || res.err != nil {
		t.Fatalf("the client was killed: exit %d, err %v", res.exitCode, res.err)
	}
}
