package transfer

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// One authenticated connection per target, reused, restarted when it dies,
// and bounded by Connections (issue 3 point 9).

// proc is a process seen in /proc.
type proc struct {
	pid, ppid, pgid int
	state           string
	comm            string
	cmdline         []string
}

// procs lists every process.
func procs() []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		open, close := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(b[close+1:]))
		if len(f) < 3 {
			continue
		}
		p := proc{pid: pid, comm: string(b[open+1 : close]), state: f[0]}
		p.ppid, _ = strconv.Atoi(f[1])
		p.pgid, _ = strconv.Atoi(f[2])
		if cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil {
			p.cmdline = strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
		}
		out = append(out, p)
	}
	return out
}

func (p proc) args() string { return strings.Join(p.cmdline, " ") }

// masters lists the shared-connection ssh processes whose socket is in dir.
func masters(dir string) []proc {
	var out []proc
	for _, p := range procs() {
		if p.ppid == os.Getpid() && p.state != "Z" && strings.Contains(p.args(), "ControlMaster=yes") && strings.Contains(p.args(), "ControlPath="+dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

// masterDown waits until the client has seen its shared connection end.
func masterDown(t *testing.T, c *Client) {
	t.Helper()
	poll(t, 10*time.Second, "the client to notice its shared connection ended", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.master == nil || !c.master.alive()
	})
}

func TestConnectionReuseBuiltinServer(t *testing.T) {
	t.Parallel()
	srv, tg := startSFTPD(t, sftpd.Account{Password: testPassword}, sftpd.Config{})
	dir := controlDir(t)
	c := newClient(t, tg, Options{Atomic: true, ControlDir: dir})
	remote := t.TempDir()
	n := 0
	next := func() []Item {
		n++
		id := fmt.Sprintf("f%d", n)
		return []Item{localItem(t, id, id+".txt", content(id, 5000), remote, id+".txt")}
	}

	for range 3 {
		items := next()
		wantDelivered(t, items, upload(t, c, items, Observer{}))
	}
	var wg sync.WaitGroup
	for range 4 {
		items := next()
		wg.Go(func() { wantDelivered(t, items, upload(t, c, items, Observer{})) })
	}
	wg.Wait()
	st := srv.Stats()
	if st.Logins != 1 || st.AuthAttempts["password"] != 1 || st.Sessions != 7 {
		t.Fatalf("7 uploads: %d logins, %d password attempts, %d sessions; want 1, 1, 7", st.Logins, st.AuthAttempts["password"], st.Sessions)
	}

	// The shared connection dies: the next upload starts a new one.
	ms := masters(dir)
	if len(ms) != 1 {
		t.Fatalf("%d shared connections running, want 1: %+v", len(ms), ms)
	}
	if err := syscall.Kill(ms[0].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	masterDown(t, c)
	items := next()
	wantDelivered(t, items, upload(t, c, items, Observer{}))
	again := masters(dir)
	if len(again) != 1 || again[0].pid == ms[0].pid {
		t.Errorf("after the kill: shared connections %+v, want one new one", again)
	}
	items = next()
	wantDelivered(t, items, upload(t, c, items, Observer{}))
	if st := srv.Stats(); st.Logins != 2 || st.AuthAttempts["password"] != 2 {
		t.Errorf("after a restart and 2 uploads: %d logins, %d password attempts; want 2, 2", st.Logins, st.AuthAttempts["password"])
	}

	// Close stops the shared connection.
	c.Close()
	poll(t, 10*time.Second, "the shared connection to stop", func() bool { return len(masters(dir)) == 0 })
	c.Close() // idempotent
}

func TestConnectionReuseRealSSHD(t *testing.T) {
	t.Parallel()
	srv, tg := startSSHD(t, sshdtest.Options{})
	c := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t)})
	remote := t.TempDir()
	var wg sync.WaitGroup
	for i := range 6 {
		id := fmt.Sprintf("s%d", i)
		items := []Item{localItem(t, id, id+".txt", content(id, 3000), remote, "sub/"+id+".txt")}
		if i < 2 {
			wantDelivered(t, items, upload(t, c, items, Observer{}))
			continue
		}
		wg.Go(func() { wantDelivered(t, items, upload(t, c, items, Observer{})) })
	}
	wg.Wait()
	if n := acceptedLogins(srv); n != 1 {
		t.Errorf("6 uploads logged in %d times, want 1", n)
	}
}

// Connections bounds the target's parallel transfers.
func TestConnectionsBoundsParallelUploads(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	_, tg := startSFTPD(t, acct, sftpd.Config{Faults: sftpd.Faults{WriteDelay: 400 * time.Millisecond}})
	tg.Identity = key
	tg.Connections = 1
	c := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t)})
	remote := t.TempDir()
	type span struct{ begin, end time.Time }
	spans := make([]span, 3)
	var wg sync.WaitGroup
	for i := range spans {
		id := fmt.Sprintf("p%d", i)
		items := []Item{localItem(t, id, id+".bin", content(id, 256<<10), remote, id+".bin")}
		wg.Go(func() {
			obs := Observer{Begin: func(string) { spans[i].begin = time.Now() }}
			wantDelivered(t, items, upload(t, c, items, obs))
			spans[i].end = time.Now()
		})
	}
	wg.Wait()
	for i := range spans {
		for j := range spans {
			if i != j && spans[i].begin.Before(spans[j].begin) && spans[j].begin.Before(spans[i].end) {
				t.Errorf("upload %d began while upload %d was running", j, i)
			}
		}
	}
}

// A client the shared connection cannot serve (the server allows one session
// per connection) falls back to a connection of its own, and its password
// prompt is answered too.
func TestFallbackConnectionIsAnswered(t *testing.T) {
	t.Parallel()
	srv, tg := startSFTPD(t, sftpd.Account{Password: testPassword}, sftpd.Config{MaxSessions: 1, Faults: sftpd.Faults{WriteDelay: time.Second}})
	tg.Connections = 2
	c := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t)})
	remote := t.TempDir()
	rec := &recorder{}
	var wg sync.WaitGroup
	for i := range 2 {
		id := fmt.Sprintf("fb%d", i)
		items := []Item{localItem(t, id, id+".bin", content(id, 512<<10), remote, id+".bin")}
		wg.Go(func() { wantDelivered(t, items, upload(t, c, items, rec.observer())) })
	}
	wg.Wait()
	if !rec.contains("Session open refused by peer") {
		t.Errorf("no client was refused a session: the test proves nothing\n%s", rec.text())
	}
	if st := srv.Stats(); st.Logins != 2 || st.AuthAttempts["password"] != 2 || st.AuthFailures["password"] != 0 {
		t.Errorf("stats %+v: want 2 logins (shared and fallback), each with one good password", st)
	}
	if rec.contains(testPassword) {
		t.Error("the password was published")
	}
}
