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
				t.Fatal(err)
			}
			out = append(out, Item{ID: id, Local: p, RemoteDir: remote, Rel: "d/" + id, Size: int64(size)})
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
	ctx := context.Background()
	run := func(c *Client, batch []Item) []Result {
		cctx, cancel := context.WithTimeout(ctx, uploadDeadline)
		defer cancel()
		res := c.Upload(cctx, batch, Observer{})
		count(res)
		return res
	}

	var wg sync.WaitGroup
	// Successes through a shared connection, sequential and parallel, and
	// without one; auth failures with and without; refused connections;
	// host-key probes; a bad name.
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
	bad[0].Rel = "new\nline"
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
				count(c.Upload(cctx, items(1, 4<<20), obs))
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

// Cancelling an Upload kills the client's whole process group at once.
func TestCancelKillsProcessGroup(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	srv, tg := startSFTPD(t, acct, sftpd.Config{Faults: sftpd.Faults{WriteDelay: 2 * time.Second}})
	tg.Identity = key
	for _, shared := range []bool{false, true} {
		opts := Options{Atomic: true}
		if shared {
			opts.ControlDir = controlDir(t)
		}
		c := newClient(t, tg, opts)
		remote := t.TempDir()
		items := []Item{localItem(t, "cx", "cx.bin", content("cx", 8<<20), remote, "cx.bin")}
		ctx, cancel := context.WithCancel(context.Background())
		var group []proc
		var canceledAt time.Time
		obs := Observer{Begin: func(string) {
			// The sftp of this upload and the ssh it started share a
			// process group of their own.
			for _, p := range clientsFor(srv.Port()) {
				if p.comm == "sftp" {
					for _, q := range procs() {
						if q.pgid == p.pid {
							group = append(group, q)
						}
					}
				}
			}
			canceledAt = time.Now()
			cancel()
		}}
		res := c.Upload(ctx, items, obs)
		returned := time.Since(canceledAt)
		cancel()
		t.Logf("shared=%v returned after %s", shared, returned)
		wantClass(t, res[0].Err, ClassCanceled)
		if returned > 2*time.Second {
			t.Errorf("shared=%v: Upload returned %s after the cancel", shared, returned)
		}
		if len(group) < 1 || (!shared && len(group) < 2) {
			t.Fatalf("shared=%v: process group %+v: want sftp and its ssh", shared, group)
		}
		for _, p := range group {
			if b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat"); err == nil {
				t.Errorf("shared=%v: %s (pid %d) of the canceled upload still exists: %s", shared, p.comm, p.pid, b)
			}
		}
		wantAbsent(t, items[0].RemotePath())
	}
}
