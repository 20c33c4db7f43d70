package transfer

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
)

// No goroutine, file descriptor or process outlives a transfer, whatever way
// it ended (issue 3 point 4).

// openFDs counts the test process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// children lists the test process's child processes, zombies included.
func children() []proc {
	var out []proc
	for _, p := range procs() {
		if p.ppid == os.Getpid() {
			out = append(out, p)
		}
	}
	return out
}

// clientsFor lists every ssh and sftp process, anywhere, that talks to one of
// the ports.
func clientsFor(ports ...int) []proc {
	var out []proc
	for _, p := range procs() {
		if p.comm != "ssh" && p.comm != "sftp" {
			continue
		}
		for _, port := range ports {
			if slicesContain(p.cmdline, strconv.Itoa(port)) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestNoLeaks is not parallel: it counts the whole process's goroutines and
// file descriptors, and runs before the parallel tests start.
func TestNoLeaks(t *testing.T) {
	requireClients(t)
	acct, key := keyAccount(t)
	pwSrv, pwTarget := startSFTPD(t, sftpd.Account{Password: testPassword}, sftpd.Config{})
	faultSrv, faultTarget := startSFTPD(t, acct, sftpd.Config{})
	faultTarget.Identity = key
	faultTarget.StallTimeout = 2 * time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	refused := pwTarget
	refused.Port = refusedPort
	ports := []int{pwSrv.Port(), faultSrv.Port(), refusedPort}
	remote := t.TempDir()
	local := t.TempDir()
	var seq int
	var seqMu sync.Mutex
	items := func(n, size int) []Item {
		seqMu.Lock()
		defer seqMu.Unlock()
		var out []Item
		for range n {
			seq++
			id := fmt.Sprintf("L%03d", seq)
			p := filepath.Join(local, id)
			if err := os.WriteFile(p, content(id, size), 0o644); err != nil {
				t.Error(err)
				continue
			}
			f, err := os.Open(p)
			if err != nil {
				t.Error(err)
				continue
			}
			out = append(out, Item{ID: id, File: f, Local: p, RemoteDir: remote, Rel: "d/" + id, Size: int64(size)})
		}
		return out
	}

	// Settle, then the baseline: the servers are up, no client has run, and
	// the process-wide spawner thread (which lives for good) is started.
	spawner()
	runtime.GC()
	time.Sleep(100 * time.Millisecond)
	baseGoroutines := runtime.NumGoroutine()
	baseFDs := openFDs(t)
	baseChildren := len(children())

	var outcomes sync.Map // class -> count
	count := func(res []Result) {
		for _, r := range res {
			c := ClassOf(r.Err)
			if c == "" {
				c = "ok"
			}
			v, _ := outcomes.LoadOrStore(c, new(int))
			seqMu.Lock()
			*v.(*int)++
			seqMu.Unlock()
		}
	}
	// The caller owns the items' descriptors: closed once Upload returns,
	// so that only the engine's own could be left.
	closeAll := func(batch []Item) {
		for _, it := range batch {
			it.File.Close()
		}
	}
	ctx := context.Background()
	run := func(c *Client, batch []Item) []Result {
		defer closeAll(batch)
		cctx, cancel := context.WithTimeout(ctx, uploadDeadline)
		defer cancel()
		res := c.Upload(cctx, batch, Observer{})
		count(res)
		return res
	}

	var wg sync.WaitGroup
	// Successes through clients with a control folder of their own and
	// without (the client makes one), sequential and parallel; auth
	// failures with and without; refused connections; host-key probes; a
	// name that is not a relative path.
	shared := newClient(t, pwTarget, Options{Atomic: true, ControlDir: controlDir(t)})
	direct := newClient(t, pwTarget, Options{Atomic: true})
	wrong := pwTarget
	wrong.Password = NewSecret([]byte("wrong"))
	wrongShared := newClient(t, wrong, Options{Atomic: true, ControlDir: controlDir(t)})
	wrongDirect := newClient(t, wrong, Options{Atomic: true})
	refusedClient := newClient(t, refused, Options{Atomic: true, ControlDir: controlDir(t)})
	for i := range 6 {
		wg.Go(func() { run(shared, items(2, 10<<10)) })
		if i%2 == 0 {
			wg.Go(func() { run(direct, items(1, 1000)) })
		}
		if i < 2 {
			wg.Go(func() { run(wrongShared, items(1, 10)) })
			wg.Go(func() { run(wrongDirect, items(1, 10)) })
			wg.Go(func() { run(refusedClient, items(1, 10)) })
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				if _, err := FetchHostKey(cctx, pwTarget, Options{}); err != nil {
					t.Errorf("FetchHostKey: %v", err)
				}
			})
		}
	}
	bad := items(1, 10)
	bad[0].Rel = "../escape"
	wg.Go(func() { run(shared, bad) })
	wg.Wait()

	// Faults, one kind at a time: disconnects, stalls killed by the
	// watchdog, and uploads canceled mid-file.
	faulty := newClient(t, faultTarget, Options{Atomic: true, ControlDir: controlDir(t)})
	faultyDirect := newClient(t, faultTarget, Options{Atomic: true})
	phases := []struct {
		faults sftpd.Faults
		n      int
		cancel bool
	}{
		{sftpd.Faults{DisconnectAfter: 64 << 10}, 4, false},
		{sftpd.Faults{HangAfter: 64 << 10}, 2, false},
		{sftpd.Faults{WriteDelay: time.Second}, 4, true},
	}
	for _, ph := range phases {
		faultSrv.SetFaults(ph.faults)
		for i := range ph.n {
			c := faulty
			if i%2 == 1 {
				c = faultyDirect
			}
			wg.Go(func() {
				if !ph.cancel {
					run(c, items(1, 1<<20))
					return
				}
				cctx, cancel := context.WithCancel(ctx)
				defer cancel()
				obs := Observer{Begin: func(string) { time.AfterFunc(200*time.Millisecond, cancel) }}
				batch := items(1, 4<<20)
				defer closeAll(batch)
				count(c.Upload(cctx, batch, obs))
			})
		}
		wg.Wait()
		faultSrv.SetFaults(sftpd.Faults{}) // releases frozen server connections
	}
	for _, c := range []*Client{shared, direct, wrongShared, wrongDirect, refusedClient, faulty, faultyDirect} {
		c.Close()
	}

	var summary []string
	total := 0
	outcomes.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%s=%d", k, *v.(*int)))
		total += *v.(*int)
		return true
	})
	t.Logf("outcomes: %s", strings.Join(summary, " "))
	for _, want := range []Class{"ok", ClassAuth, ClassConnectRefused, ClassLostConnection, ClassCanceled, ClassBadName} {
		if v, ok := outcomes.Load(want); !ok || *v.(*int) == 0 {
			t.Errorf("no %s outcome: the mix is not what the test claims", want)
		}
	}
	if total < 30 {
		t.Errorf("only %d outcomes", total)
	}

	deadline := 10 * time.Second
	poll(t, deadline, "no ssh or sftp process left", func() bool { return len(clientsFor(ports...)) == 0 })
	poll(t, deadline, "no child process left (zombies included)", func() bool { return len(children()) <= baseChildren })
	var g, f int
	pollOK := func(cond func() bool) bool {
		end := time.Now().Add(deadline)
		for time.Now().Before(end) {
			if cond() {
				return true
			}
			time.Sleep(50 * time.Millisecond)
		}
		return false
	}
	if !pollOK(func() bool { g = runtime.NumGoroutine(); return g <= baseGoroutines }) {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines, baseline %d:\n%s", g, baseGoroutines, buf[:runtime.Stack(buf, true)])
	}
	if !pollOK(func() bool { f = openFDs(t); return f <= baseFDs }) {
		entries, _ := os.ReadDir("/proc/self/fd")
		var links []string
		for _, e := range entries {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			links = append(links, e.Name()+" -> "+l)
		}
		t.Errorf("%d open fds, baseline %d:\n%s", f, baseFDs, strings.Join(links, "\n"))
	}
}

// sessionProcs lists the SFTP sessions' ssh processes that talk to port:
// `ssh … -s -- host sftp`, through the shared connection.
func sessionProcs(port int) []proc {
	var out []proc
	for _, p := range clientsFor(port) {
		if p.comm == "ssh" && slicesContain(p.cmdline, "-s") && slicesContain(p.cmdline, "sftp") && p.state != "Z" {
			out = append(out, p)
		}
	}
	return out
}

// Cancelling an Upload kills its SFTP session's whole process group at once:
// nothing of it remains, and the upload returns promptly.
func TestCancelKillsProcessGroup(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	srv, tg := startSFTPD(t, acct, sftpd.Config{Faults: sftpd.Faults{WriteDelay: 2 * time.Second}})
	tg.Identity = key
	for _, ownDir := range []bool{false, true} {
		opts := Options{Atomic: true}
		if !ownDir {
			opts.ControlDir = controlDir(t)
		}
		c := newClient(t, tg, opts)
		remote := t.TempDir()
		items := []Item{localItem(t, "cx", "cx.bin", content("cx", 8<<20), remote, "cx.bin")}
		ctx, cancel := context.WithCancel(context.Background())
		var group []proc
		var leaders []proc
		var canceledAt time.Time
		obs := Observer{Begin: func(string) {
			// The session's ssh leads a process group of its own
			// (Setsid): everything in it goes with the cancel.
			leaders = sessionProcs(srv.Port())
			for _, p := range leaders {
				for _, q := range procs() {
					if q.pgid == p.pid {
						group = append(group, q)
					}
				}
			}
			canceledAt = time.Now()
			cancel()
		}}
		res := c.Upload(ctx, items, obs)
		returned := time.Since(canceledAt)
		cancel()
		var pids []int
		for _, p := range group {
			pids = append(pids, p.pid)
		}
		t.Logf("ownDir=%v returned after %s; session process group %v", ownDir, returned, pids)
		wantClass(t, res[0].Err, ClassCanceled)
		if returned > 2*time.Second {
			t.Errorf("ownDir=%v: Upload returned %s after the cancel", ownDir, returned)
		}
		if len(leaders) != 1 {
			t.Fatalf("ownDir=%v: SFTP session processes %+v: want exactly one", ownDir, leaders)
		}
		if leaders[0].pgid != leaders[0].pid {
			t.Errorf("ownDir=%v: the session's ssh (pid %d) is in process group %d, not its own", ownDir, leaders[0].pid, leaders[0].pgid)
		}
		// Killed at the cancel; reaped as soon as its exit is read.
		poll(t, 2*time.Second, "the canceled session's processes to be gone", func() bool {
			for _, p := range group {
				if _, err := os.Stat("/proc/" + strconv.Itoa(p.pid)); err == nil {
					return false
				}
			}
			return len(sessionProcs(srv.Port())) == 0
		})
		wantAbsent(t, items[0].RemotePath())
	}
}
