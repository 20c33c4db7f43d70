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

// One login serves every upload, and SFTP sessions are long-lived: many
// uploads, sequential and parallel, open at most Connections of them.
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

	const sequential, parallel = 10, 12
	for range sequential {
		items := next()
		wantDelivered(t, items, upload(t, c, items, Observer{}))
	}
	var wg sync.WaitGroup
	for range parallel {
		items := next()
		wg.Go(func() { wantDelivered(t, items, upload(t, c, items, Observer{})) })
	}
	wg.Wait()
	st := srv.Stats()
	t.Logf("%d uploads: %d logins, %d password attempts, %d SFTP sessions (connections = %d)", sequential+parallel, st.Logins, st.AuthAttempts["password"], st.Sessions, tg.Connections)
	if st.Logins != 1 || st.AuthAttempts["password"] != 1 || st.Connections != 1 {
		t.Fatalf("%d uploads: %d logins, %d password attempts, %d TCP connections; want 1, 1, 1", sequential+parallel, st.Logins, st.AuthAttempts["password"], st.Connections)
	}
	if st.Sessions < 1 || st.Sessions > tg.Connections {
		t.Fatalf("%d uploads opened %d SFTP sessions; want 1 to %d (connections)", sequential+parallel, st.Sessions, tg.Connections)
	}

	// The shared connection dies: the next upload starts a new one, with
	// one new login, and new sessions through it.
	ms := masters(dir)
	if len(ms) != 1 {
		t.Fatalf("%d shared connections running, want 1: %+v", len(ms), ms)
	}
	if err := syscall.Kill(ms[0].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	masterDown(t, c)
	before := srv.Stats().Sessions
	for range 3 {
		items := next()
		wantDelivered(t, items, upload(t, c, items, Observer{}))
	}
	again := masters(dir)
	if len(again) != 1 || again[0].pid == ms[0].pid {
		t.Errorf("after the kill: shared connections %+v, want one new one", again)
	}
	st = srv.Stats()
	if st.Logins != 2 || st.AuthAttempts["password"] != 2 || st.AuthFailures["password"] != 0 {
		t.Errorf("after a restart and 3 uploads: %d logins, %d password attempts (%d failed); want 2, 2 (0)", st.Logins, st.AuthAttempts["password"], st.AuthFailures["password"])
	}
	if d := st.Sessions - before; d < 1 || d > tg.Connections {
		t.Errorf("after the restart 3 uploads opened %d SFTP sessions; want 1 to %d", d, tg.Connections)
	}

	// Close stops the shared connection and its sessions.
	c.Close()
	poll(t, 10*time.Second, "the shared connection and its sessions to stop", func() bool {
		return len(masters(dir)) == 0 && len(sessionProcs(srv.Port())) == 0
	})
	c.Close() // idempotent
}

// A password target whose shared connection died: the next upload never
// types the password into an SFTP session (their ssh runs with BatchMode=yes
// and ProxyCommand=/bin/false, through the shared connection only). It
// starts a new shared connection, which logs in once, or fails cleanly; the
// one after it is delivered.
func TestSessionsNeverPromptAfterTheMasterDied(t *testing.T) {
	t.Parallel()
	srv, tg := startSFTPD(t, sftpd.Account{Password: testPassword}, sftpd.Config{})
	dir := controlDir(t)
	rec := &recorder{}
	c := newClient(t, tg, Options{Atomic: true, ControlDir: dir, OnConnectionLine: rec.connectionLine})
	remote := t.TempDir()
	n := 0
	next := func() []Item {
		n++
		id := fmt.Sprintf("k%d", n)
		return []Item{localItem(t, id, id+".txt", content(id, 3000), remote, id+".txt")}
	}
	items := next()
	wantDelivered(t, items, upload(t, c, items, Observer{}))
	for _, p := range sessionProcs(srv.Port()) {
		if !slicesContain(p.cmdline, "BatchMode=yes") || !slicesContain(p.cmdline, "ProxyCommand=/bin/false") {
			t.Errorf("session ssh %q lacks BatchMode=yes or ProxyCommand=/bin/false", p.args())
		}
	}

	for round := range 3 {
		ms := masters(dir)
		if len(ms) != 1 {
			t.Fatalf("round %d: %d shared connections running, want 1: %+v", round, len(ms), ms)
		}
		before := srv.Stats()
		// No waiting for the client to notice: the upload may find the
		// dead master's session still running.
		if err := syscall.Kill(ms[0].pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		items := next()
		res := upload(t, c, items, Observer{})
		if res[0].Err != nil {
			cl := ClassOf(res[0].Err)
			t.Logf("round %d: the upload right after the kill failed: %v", round, res[0].Err)
			if cl != ClassLostConnection {
				t.Errorf("round %d: class %s, want a lost connection: %v", round, cl, res[0].Err)
			}
			wantAbsent(t, items[0].RemotePath())
		} else {
			wantRemote(t, items[0])
		}
		items = next()
		wantDelivered(t, items, upload(t, c, items, Observer{}))
		st := srv.Stats()
		logins := st.Logins - before.Logins
		attempts := st.AuthAttempts["password"] - before.AuthAttempts["password"]
		conns := st.Connections - before.Connections
		if logins != 1 || attempts != 1 || conns != 1 || st.AuthFailures["password"] != 0 {
			t.Errorf("round %d: %d new logins, %d password attempts, %d TCP connections, %d failed passwords; want 1, 1, 1, 0", round, logins, attempts, conns, st.AuthFailures["password"])
		}
		wantNoTempFiles(t, remote)
	}
	if rec.contains(testPassword) {
		t.Error("the password was published")
	}
	if t.Failed() {
		t.Logf("output:\n%s", rec.text())
	}
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

// Connections bounds the target's SFTP sessions, not its files: with
// connections = 1, uploads running at once share the one session (their files
// overlap on it), and the server sees a single login and a single session.
func TestConnectionsBoundsSessions(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	srv, tg := startSFTPD(t, acct, sftpd.Config{Faults: sftpd.Faults{WriteDelay: 400 * time.Millisecond}})
	tg.Identity = key
	tg.Connections = 1
	c := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t)})
	remote := t.TempDir()
	items := make([][]Item, 3)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range items {
		id := fmt.Sprintf("p%d", i)
		items[i] = []Item{localItem(t, id, id+".bin", content(id, 256<<10), remote, id+".bin")}
		wg.Go(func() { wantDelivered(t, items[i], upload(t, c, items[i], Observer{})) })
	}
	wg.Wait()
	took := time.Since(start)
	st := srv.Stats()
	if st.Logins != 1 || st.Sessions != 1 {
		t.Errorf("%d logins and %d SFTP sessions, want 1 and 1", st.Logins, st.Sessions)
	}
	if n := st.Renames + st.PosixRenames; n != len(items) {
		t.Errorf("%d renames, want %d", n, len(items))
	}
	// Each file's writes wait 400 ms at the server: one after the other
	// they would take 1.2 s of writes alone.
	t.Logf("3 uploads sharing one session took %s", took)
}

// A server that allows one session per connection (MaxSessions 1) with
// connections = 2: the second upload is refused its own SFTP session and
// shares the first one. No second login ever happens.
func TestRefusedSessionSharesTheLiveOne(t *testing.T) {
	t.Parallel()
	srv, tg := startSFTPD(t, sftpd.Account{Password: testPassword}, sftpd.Config{MaxSessions: 1, Faults: sftpd.Faults{WriteDelay: 200 * time.Millisecond}})
	tg.Connections = 2
	rec := &recorder{}
	c := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t), OnConnectionLine: rec.connectionLine})
	remote := t.TempDir()
	var wg sync.WaitGroup
	for i := range 2 {
		id := fmt.Sprintf("fb%d", i)
		items := []Item{localItem(t, id, id+".bin", content(id, 512<<10), remote, id+".bin")}
		wg.Go(func() { wantDelivered(t, items, upload(t, c, items, rec.observer())) })
	}
	wg.Wait()
	if !rec.contains("Session open refused by peer") && !rec.contains("session request failed") {
		t.Errorf("no upload was refused a session: the test proves nothing\n%s", rec.text())
	}
	if st := srv.Stats(); st.Logins != 1 || st.AuthAttempts["password"] != 1 || st.AuthFailures["password"] != 0 || st.Connections != 1 || st.Sessions != 1 {
		t.Errorf("stats %+v: want 1 TCP connection, 1 login with one good password, 1 SFTP session", st)
	}
	wantNoTempFiles(t, remote)
	if rec.contains(testPassword) {
		t.Error("the password was published")
	}
}
