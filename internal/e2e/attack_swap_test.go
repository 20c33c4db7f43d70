package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// swapKind is what the attacker puts where a ready file was.
type swapKind int

const (
	swapSymlink  swapKind = iota // a symlink to the secret (or to its folder)
	swapHardlink                 // a hard link to the secret
	swapDir                      // a folder (holding a symlink to the secret)
	swapRename                   // another regular file renamed over it
	swapKinds
)

func (k swapKind) String() string {
	return [...]string{"symlink", "hardlink", "directory", "rename-over"}[k]
}

// swap is one attack on one file.
type swap struct {
	lane       string
	path       string // the local file
	remote     string // its final remote path
	kind       swapKind
	how        string // details: what the link points to, when it happened
	original   string // sha256 of the content written first
	size       int
	renamedIn  bool   // the original was renamed into the folder rather than written there
	newer      string // rename-over: sha256 of the file renamed over it
	at         time.Time
	seenBefore []events.TransferState // the states seen before the swap
}

// allowedFailure are the classes a failed event may have after a swap.
var allowedFailure = []string{"local-changed", "unsafe-path", "local-file"}

// TestAttackSwaps swaps ready files for symlinks to a secret outside the
// watch, hard links to it, folders, and other files, at random moments
// between "ready" and "renamed on the remote", 200 times per variant, in
// eight folders at once: four to a real sshd (with files of up to 4 MiB),
// four to the built-in server slowed down by a write delay, so that swaps
// land in the middle of transfers. The secret (mode 0600, readable by the
// agent's user) must never reach the remote, not even as a fragment in a
// leftover temporary file, no event may carry its sha256, and every swapped
// file must end with a failed event of class local-changed, unsafe-path or
// local-file, or with completed events whose sha256 is that of content that
// really was in the regular file (the original, or the file renamed over
// it), the remote holding exactly what a completed event describes.
func TestAttackSwaps(t *testing.T) {
	forEachAgentUser(t, testAttackSwaps)
}

func testAttackSwaps(t *testing.T, u *agentUser) {
	rnd := &lockedRand{r: newRand(t)}
	srv := sshdtest.Start(t, sshdtest.Options{MaxSessions: 20})
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

	e.sshdKeyTarget("sshd", srv, fastRemote).set("retry_max", 3).set("connections", 3)
	e.sftpdPasswordTarget("slow", slow.Port(), slow.HostKeyFingerprint(), "alice", password, slowRemote).
		set("retry_max", 3).set("connections", 3)
	fastWatch := e.watch
	slowWatch := filepath.Join(e.dir, "drop-slow")
	e.watchFolder(fastWatch, "sshd")
	e.watchFolder(slowWatch, "slow")
	e.writeConf()

	c := collect(t, n.url())
	tr := track(t, n.url())
	agent := e.startAgent()

	type laneSpec struct {
		name, watch, remote string
		maxSize             int
	}
	var lanes []laneSpec
	for i := range 4 {
		lanes = append(lanes, laneSpec{fmt.Sprintf("sshd-%d", i), fastWatch, fastRemote, 4 << 20})
		lanes = append(lanes, laneSpec{fmt.Sprintf("slow-%d", i), slowWatch, slowRemote, 1 << 20})
	}
	const swapsPerLane = 25 // 8 lanes: 200 swaps
	var (
		mu    sync.Mutex
		swaps []*swap
		wg    sync.WaitGroup
	)
	begin := time.Now()
	for _, l := range lanes {
		dir := filepath.Join(l.watch, l.name)
		e.mkdirOwned(dir)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range swapsPerLane {
				s := e.attackOnce(t, rnd, tr, l.name, dir, filepath.Join(l.remote, l.name), i, l.maxSize)
				if s == nil {
					return
				}
				mu.Lock()
				swaps = append(swaps, s)
				mu.Unlock()
				time.Sleep(rnd.between(0, 80*time.Millisecond))
			}
		}()
	}
	wg.Wait()
	t.Logf("%d swaps in %s", len(swaps), time.Since(begin).Round(time.Millisecond))
	if t.Failed() {
		return
	}

	// Every swap must come to an end: a file that got events ends with a
	// completed or failed one; a file renamed over must have its new
	// version sent (or failed).
	resolved := func(s *swap) bool {
		evs := tr.of(s.path)
		if len(evs) == 0 {
			return s.kind != swapRename
		}
		last := evs[len(evs)-1]
		if last.state != events.TransferCompleted && last.state != events.TransferFailed {
			return false
		}
		if s.kind == swapRename && last.state == events.TransferCompleted && last.data.SHA256 != s.newer {
			// The original arrived before the swap; the newer version
			// must follow (or be failed).
			return false
		}
		return true
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var open []*swap
		for _, s := range swaps {
			if !resolved(s) {
				open = append(open, s)
			}
		}
		if len(open) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for i, s := range open {
				if i == 20 {
					t.Errorf("… and %d more unresolved swaps", len(open)-20)
					break
				}
				t.Errorf("%s (%s swap %s, original sha256 %s) never came to an end: events %s", s.path, s.kind, s.how, short(s.original), states(tr.of(s.path)))
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tr.quiet(2*time.Second, 15*time.Second)

	// The secret, anywhere.
	e.checkNoSecretAnywhere(t, c, agent, e.remote)
	_, remoteSums := e.scanRemote(e.remote)

	// Each swap's outcome.
	phase := map[string]int{}
	kinds := map[string]int{}
	for _, s := range swaps {
		evs := tr.of(s.path)
		legit := []string{s.original}
		if s.kind == swapRename {
			legit = append(legit, s.newer)
		}
		var completed []string
		for _, ev := range evs {
			switch {
			case ev.data.SHA256 == e.secretSHA:
				t.Errorf("%s (%s swap %s): a %s event carries the sha256 of the secret %s: events %s", s.path, s.kind, s.how, ev.state, e.secret, states(evs))
			case ev.state == events.TransferCompleted && !slices.Contains(legit, ev.data.SHA256):
				t.Errorf("%s (%s swap %s): completed event with sha256 %s, which is neither the original %s%s: events %s",
					s.path, s.kind, s.how, ev.data.SHA256, short(s.original), map[bool]string{true: " nor the file renamed over it " + short(s.newer)}[s.kind == swapRename], states(evs))
			case ev.state == events.TransferFailed && !slices.Contains(allowedFailure, ev.class()):
				t.Errorf("%s (%s swap %s): failed with class %q, want one of %v: events %s", s.path, s.kind, s.how, ev.class(), allowedFailure, states(evs))
			}
			if ev.state == events.TransferCompleted {
				completed = append(completed, ev.data.SHA256)
			}
		}
		if sum, ok := remoteSums[s.remote]; ok {
			if sum == e.secretSHA {
				t.Errorf("%s (%s swap %s): the remote %s holds the secret %s", s.path, s.kind, s.how, s.remote, e.secret)
			} else if !slices.Contains(completed, sum) {
				t.Errorf("%s (%s swap %s): the remote %s holds content (sha256 %s) that no completed event describes (completed: %v; original %s): events %s",
					s.path, s.kind, s.how, s.remote, short(sum), completed, short(s.original), states(evs))
			}
		}
		kinds[s.kind.String()]++
		switch {
		case slices.Contains(s.seenBefore, events.TransferCompleted):
			phase["after completed"]++
		case slices.Contains(s.seenBefore, events.TransferStarted):
			phase["during a transfer"]++
		case slices.Contains(s.seenBefore, events.TransferQueued):
			phase["queued, not started"]++
		default:
			phase["before queued"]++
		}
	}
	// Every other path that got events (a file inside a swapped-in
	// folder, say) must not have been completed with foreign content.
	known := map[string]bool{}
	for _, s := range swaps {
		known[jsonString(s.path)] = true
	}
	for p, evs := range tr.all() {
		if known[p] {
			continue
		}
		for _, ev := range evs {
			if ev.state == events.TransferCompleted {
				t.Errorf("%s, which no test wrote as a regular file, was completed (sha256 %s): events %s", p, short(ev.data.SHA256), states(evs))
			}
		}
	}
	t.Logf("swaps by kind %v; by the moment they landed (states seen by then) %v; %d lifecycle events", kinds, phase, tr.total)
}

// attackOnce writes one file, waits for a random moment, and swaps it.
func (e *attackEnv) attackOnce(t *testing.T, rnd *lockedRand, tr *tracker, lane, dir, remoteDir string, i, maxSize int) *swap {
	name := fmt.Sprintf("f%03d.bin", i)
	p := filepath.Join(dir, name)
	var size int
	switch r := rnd.intN(100); {
	case r < 35:
		size = 1 + rnd.intN(64<<10)
	case r < 75:
		size = 256<<10 + rnd.intN(768<<10)
	default:
		size = maxSize/2 + rnd.intN(maxSize/2)
	}
	data := rnd.bytes(size)
	s := &swap{lane: lane, path: p, remote: filepath.Join(remoteDir, name), kind: swapKind(rnd.intN(int(swapKinds))), original: sha256Hex(data), size: size}
	tmp := filepath.Join(e.stage, fmt.Sprintf("%s-%03d", lane, i))
	if rnd.intN(2) == 0 {
		s.renamedIn = true
		writeFile(t, tmp, data)
		if err := os.Rename(tmp, p); err != nil {
			t.Error(err)
			return nil
		}
	} else {
		writeFile(t, p, data)
	}

	// When: timed from the write (around the settle, so some land before
	// the file is ready), or from the moment it is queued or started.
	var when string
	switch r := rnd.intN(100); {
	case r < 35:
		d := rnd.between(200*time.Millisecond, 900*time.Millisecond)
		time.Sleep(d)
		when = fmt.Sprintf("%s after the write", d)
	case r < 55:
		tr.waitFor(p, events.TransferQueued, 5*time.Second)
		d := rnd.between(0, 2*time.Millisecond+time.Duration(size/(32<<10))*time.Millisecond)
		time.Sleep(d)
		when = fmt.Sprintf("%s after queued", d)
	default:
		tr.waitFor(p, events.TransferStarted, 5*time.Second)
		// Scaled to the size, so that most land before the transfer ends.
		d := rnd.between(0, 3*time.Millisecond+time.Duration(size/(8<<10))*time.Millisecond)
		time.Sleep(d)
		when = fmt.Sprintf("%s after started", d)
	}
	for _, ev := range tr.of(p) {
		if !slices.Contains(s.seenBefore, ev.state) {
			s.seenBefore = append(s.seenBefore, ev.state)
		}
	}

	switch s.kind {
	case swapSymlink:
		var dest string
		switch rnd.intN(3) {
		case 0:
			dest = e.secret
		case 1:
			rel, err := filepath.Rel(dir, e.secret)
			if err != nil {
				t.Error(err)
				return nil
			}
			dest = rel
		default:
			dest = filepath.Dir(e.secret) // a folder outside the watch
		}
		if err := os.Symlink(dest, tmp); err != nil {
			t.Error(err)
			return nil
		}
		s.how = "→ " + dest
		if err := os.Rename(tmp, p); err != nil {
			t.Error(err)
			return nil
		}
	case swapHardlink:
		if err := os.Link(e.secret, tmp); err != nil {
			t.Error(err)
			return nil
		}
		s.how = "= " + e.secret
		if err := os.Rename(tmp, p); err != nil {
			t.Error(err)
			return nil
		}
	case swapDir:
		if err := os.Mkdir(tmp, 0o755); err != nil {
			t.Error(err)
			return nil
		}
		e.chown(tmp)
		if err := os.Symlink(e.secret, filepath.Join(tmp, "inner.bin")); err != nil {
			t.Error(err)
			return nil
		}
		s.how = "holding inner.bin → " + e.secret
		// Atomically: the folder takes the file's place, the file goes
		// to the attacker's scratch folder.
		if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, p, unix.RENAME_EXCHANGE); err != nil {
			// The file was archived already: just put the folder there.
			if err := os.Rename(tmp, p); err != nil {
				t.Errorf("swap %s for a folder: %v", p, err)
				return nil
			}
		}
	case swapRename:
		newer := rnd.bytes(1 + rnd.intN(size+1))
		s.newer = sha256Hex(newer)
		writeFile(t, tmp, newer)
		s.how = fmt.Sprintf("with %d bytes sha256 %s", len(newer), short(s.newer))
		if err := os.Rename(tmp, p); err != nil {
			t.Error(err)
			return nil
		}
	}
	s.at = time.Now()
	s.how += ", " + when
	return s
}
