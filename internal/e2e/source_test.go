package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// sourceFrom adds a [[source]] pulling from dir on the real sshd srv (key
// login, strict host key), polled every interval.
func (e *env) sourceFrom(name string, srv *sshdtest.Server, dir, interval string) *table {
	e.t.Helper()
	kh := filepath.Join(e.dir, "known_hosts")
	srv.WriteKnownHosts(e.t, kh)
	return e.conf.add("[[source]]").
		set("name", name).
		set("host", srv.Host).
		set("port", srv.Port).
		set("user", srv.User).
		set("identity_file", srv.ClientKey).
		set("host_key", "strict").
		set("known_hosts_file", kh).
		set("remote_dir", dir).
		set("interval", interval).
		set("connect_timeout", "10s")
}

// fetchEvents are the fetch events c received in state st.
func fetchEvents(t testing.TB, c *collector, st events.FetchState) []events.FetchData {
	t.Helper()
	var out []events.FetchData
	for _, m := range c.ofType(st.Type()) {
		d, err := m.ev.Fetch()
		if err != nil {
			t.Fatalf("fetch event %s: %v\n%s", m.ev.ID, err, m.raw)
		}
		if want := fmt.Sprintf("%s.%s.%s.fetch.%s", prefix, agentName, d.Source.Name, st); m.subject != want {
			t.Errorf("fetch event on %s, want %s", m.subject, want)
		}
		out = append(out, d)
	}
	return out
}

// The relay of issue 15 on real parts: files on a partner's OpenSSH sshd are
// pulled and fanned out to three targets (the real sshd, a built-in server,
// and one that is down at first). A file uploaded to the source slowly is
// fetched only once complete, and once; the two targets that are up get
// every file at once, the third once it comes back; the source files are
// deleted only after all three have them, with a source-deleted event each;
// the spool is left empty.
func TestSourceRelayFanOut(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	src := filepath.Join(e.dir, "outgoing")
	nearDir, backupDir, farDir := filepath.Join(e.dir, "near"), filepath.Join(e.dir, "backup"), filepath.Join(e.dir, "far")
	for _, d := range []string{src, nearDir, backupDir, farDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.sshdTarget(srv).set("remote_dir", nearDir)
	backup := sftpdServer(t, backupDir, "alice", "secret")
	e.sftpdTarget("backup", backup, "alice", "secret").set("remote_dir", backupDir)
	farPort := freePort(t) // nothing listens yet: far is down
	e.target("far", "127.0.0.1", farPort, "bob").
		set("password_file", e.secretFile("far.password", "far-secret\n")).
		set("host_key", "accept-new").
		set("remote_dir", farDir)
	e.sourceFrom("customer", srv, src, "1s").
		set("targets", []string{"sshd", "backup", "far"}).
		set("recursive", true).
		set("after", "delete")
	e.writeConf()
	if r := dropship(t, "check", "-c", e.cfg); r.code != 0 {
		t.Fatalf("check of a config with a source: %s", r)
	}

	files := map[string][]byte{
		"report.csv":          []byte("a,b\n1,2\n"),
		"with space $(x).txt": []byte("odd name\n"),
		"sub/inner.bin":       randomBytes(t, 300<<10),
	}
	for rel, data := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(src, rel), data)
	}
	slow := randomBytes(t, 1<<20)
	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	// Uploaded to the source in pieces, each listing seeing it grown:
	// never fetched until it stopped changing.
	writeSlowly(t, filepath.Join(src, "slow.bin"), slow, 8, 300*time.Millisecond)
	files["slow.bin"] = slow

	eventually(t, 60*time.Second, "every file at the two targets that are up", func() bool {
		for rel, data := range files {
			if !sameContent(filepath.Join(nearDir, rel), data) || !sameContent(filepath.Join(backupDir, rel), data) {
				return false
			}
		}
		return true
	})
	eventually(t, 30*time.Second, "the target that is down retrying", func() bool {
		return len(c.ofType(events.TypeTransferRetrying)) > 0
	})
	for rel := range files {
		if !exists(filepath.Join(src, rel)) {
			t.Fatalf("%s was deleted from the source before every target had it", rel)
		}
	}

	far, err := sftpd.New(sftpd.Config{
		Listen: fmt.Sprintf("127.0.0.1:%d", farPort),
		Home:   farDir,
		Users:  map[string]sftpd.Account{"bob": {Password: "far-secret"}},
	})
	if err != nil {
		t.Fatalf("start the far server: %v", err)
	}
	t.Cleanup(func() { _ = far.Close() })
	eventually(t, 60*time.Second, "every file at the third target, then deleted from the source", func() bool {
		for rel, data := range files {
			if !sameContent(filepath.Join(farDir, rel), data) || exists(filepath.Join(src, rel)) {
				return false
			}
		}
		return true
	})
	spool := filepath.Join(e.state, "spool", "customer")
	eventually(t, 10*time.Second, "the spool emptied", func() bool {
		var left []string
		_ = filepath.WalkDir(spool, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				left = append(left, p)
			}
			return nil
		})
		return len(left) == 0
	})
	eventually(t, 10*time.Second, "a source-deleted event per file", func() bool {
		return len(fetchEvents(t, c, events.FetchSourceDeleted)) == len(files)
	})
	agent.stop(10 * time.Second)

	fetched := map[string]int{}
	for _, d := range fetchEvents(t, c, events.FetchFetched) {
		rel := strings.TrimPrefix(d.RemotePath, src+"/")
		fetched[rel]++
		if want := files[rel]; d.SizeBytes != int64(len(want)) || d.SHA256 != sha256Hex(want) {
			t.Errorf("fetched event of %s: %d bytes, sha256 %s; want %d, %s", rel, d.SizeBytes, d.SHA256, len(want), sha256Hex(want))
		}
	}
	for rel := range files {
		if fetched[rel] != 1 {
			t.Errorf("%s fetched %d times, want once (fetched: %v)", rel, fetched[rel], fetched)
		}
	}
	// One transfer per file and target, each completed once.
	completed := map[string]int{}
	for _, m := range c.ofType(events.TypeTransferCompleted) {
		tr := m.transfer(t)
		completed[tr.Target.Name]++
	}
	for _, tg := range []string{"sshd", "backup", "far"} {
		if completed[tg] != len(files) {
			t.Errorf("%d completed events for %s, want %d: %v", completed[tg], tg, len(files), completed)
		}
	}
	if n := len(fetchEvents(t, c, events.FetchFailed)); n != 0 {
		t.Errorf("%d fetch failed events", n)
	}
	checkOrder(t, storedEvents(t, n.url()))
}

// With after = "keep" a fetched version is remembered: it is not fetched
// again, neither at the next listings nor after a restart; a new version
// (another size or mtime) is fetched and delivered again.
func TestSourceKeepFetchesEachVersionOnce(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	src := filepath.Join(e.dir, "outgoing")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	backup := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("backup", backup, "alice", "secret")
	e.sourceFrom("customer", srv, src, "200ms").set("target", "backup")
	e.writeConf()

	p := filepath.Join(src, "daily.csv")
	v1 := []byte("version 1\n")
	writeFile(t, p, v1)
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	if r := dropship(t, "check", "-connect", "-c", e.cfg); r.code != 0 || !strings.Contains(r.stdout, "source customer: ok: logged in") {
		t.Errorf("check -connect of a source:\n%s", r)
	}
	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	eventually(t, 30*time.Second, "the file delivered", func() bool {
		return sameContent(filepath.Join(e.remote, "daily.csv"), v1) && len(c.ofType(events.TypeTransferCompleted)) == 1
	})
	never(t, 2*time.Second, "the same version fetched again", func() bool {
		return len(fetchEvents(t, c, events.FetchFetched)) > 1
	})
	st := status(t, "-c", e.cfg)
	if len(st.Sources) != 1 || st.Sources[0].Name != "customer" || st.Sources[0].LastPoll == nil || st.Sources[0].Error != "" || st.Sources[0].Held {
		t.Errorf("status of the source: %+v", st.Sources)
	}
	if r := dropship(t, "status", "-c", e.cfg); !strings.Contains(r.stdout, "SOURCE") || !strings.Contains(r.stdout, "customer") {
		t.Errorf("status does not show the source:\n%s", r)
	}
	agent.stop(10 * time.Second)

	agent = startAgent(t, e.cfg)
	agent.waitLog(20*time.Second, "agent started")
	never(t, 2*time.Second, "the same version fetched again after a restart", func() bool {
		return len(fetchEvents(t, c, events.FetchFetched)) > 1
	})
	if !exists(p) {
		t.Fatal("the source file was removed with after = keep")
	}

	v2 := []byte("version 2, longer\n")
	writeFile(t, p, v2)
	eventually(t, 30*time.Second, "the new version fetched and delivered", func() bool {
		return sameContent(filepath.Join(e.remote, "daily.csv"), v2) && len(c.ofType(events.TypeTransferCompleted)) == 2
	})
	agent.stop(10 * time.Second)
	if got := len(fetchEvents(t, c, events.FetchFetched)); got != 2 {
		t.Errorf("%d fetched events, want 2 (one per version)", got)
	}
	// Stored in the stream, and replayed by `dropship events`.
	evp := startProc(t, "events", "-nats", n.url(), "-since", "1h", "-type", "fetch.fetched", "-target", "customer")
	eventually(t, 15*time.Second, "both fetched events replayed", func() bool {
		return strings.Count(evp.logs(), p+" -> ") == 2
	})
	evp.stop(5 * time.Second)
}

// A source whose login is refused is held: one failed event with class
// auth, no second try at every interval (that could lock the partner's
// account), and `status` says so; once the partner fixed it, `dropship
// retry` releases it.
func TestSourceRefusedLoginIsHeld(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	src := filepath.Join(e.dir, "outgoing")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	stranger := filepath.Join(e.dir, "stranger_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	backup := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("backup", backup, "alice", "secret")
	e.sourceFrom("customer", srv, src, "200ms").set("target", "backup").set("identity_file", stranger)
	e.writeConf()
	writeFile(t, filepath.Join(src, "waiting.csv"), []byte("x\n"))

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	eventually(t, 30*time.Second, "a failed fetch event", func() bool {
		return len(fetchEvents(t, c, events.FetchFailed)) > 0
	})
	d := fetchEvents(t, c, events.FetchFailed)[0]
	if d.Error == nil || d.Error.Class != "auth" || d.Error.Retryable {
		t.Errorf("failed event's error %+v, want class auth, not retryable", d.Error)
	}
	never(t, 2*time.Second, "the refused login tried again", func() bool {
		return len(fetchEvents(t, c, events.FetchFailed)) > 1
	})
	st := status(t, "-c", e.cfg)
	if len(st.Sources) != 1 || !st.Sources[0].Held || !strings.Contains(st.Sources[0].Error, "auth") {
		t.Errorf("status of the held source: %+v", st.Sources)
	}
	// Each listing that fails so says it: one line, one login.
	if n := strings.Count(agent.logs(), "the source is held"); n != 1 {
		t.Errorf("%d ERRORs saying the source is held, want 1 (one refused login):\n%s", n, agent.logs())
	}
	if exists(filepath.Join(e.remote, "waiting.csv")) {
		t.Error("a file was delivered from a source whose login was refused")
	}

	// The partner authorizes the key; `dropship retry` releases the
	// source, and the file comes.
	pub, err := os.ReadFile(stranger + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(srv.Dir, "authorized_keys"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(pub); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if r := dropship(t, "retry", "-c", e.cfg, "-failed"); r.code != 0 {
		t.Fatalf("retry: %s", r)
	}
	eventually(t, 30*time.Second, "the file delivered once the source was released", func() bool {
		return sameContent(filepath.Join(e.remote, "waiting.csv"), []byte("x\n"))
	})
	agent.stop(10 * time.Second)
}

// Fetching survives what delivery survives: the agent killed with -9 in the
// middle of a fetch leaves no file in the spool but its temporary one, which
// the next start removes before fetching the file again, whole and once; a
// source server that is down is one failed event, and the files come once
// it is back.
func TestSourceSurvivesKillAndServerDown(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	src := filepath.Join(e.dir, "outgoing")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	backup := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("backup", backup, "alice", "secret")
	// Slow enough to be caught in the middle.
	e.sourceFrom("customer", srv, src, "200ms").set("target", "backup").set("after", "delete").set("bandwidth", "2MiB/s")
	e.writeConf()
	big := randomBytes(t, 8<<20)
	writeFile(t, filepath.Join(src, "big.bin"), big)
	spool := filepath.Join(e.state, "spool", "customer")
	temps := func() []string {
		m, _ := filepath.Glob(filepath.Join(spool, ".dropship-fetch-*"))
		return m
	}

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	eventually(t, 30*time.Second, "a fetch under way", func() bool { return len(temps()) > 0 })
	agent.kill9()
	if exists(filepath.Join(spool, "big.bin")) {
		t.Fatal("the file is in the spool under its name before its fetch ended")
	}
	left := temps()

	srv.Stop()
	agent = startAgent(t, e.cfg)
	eventually(t, 30*time.Second, "a failed fetch event for the server that is down", func() bool {
		return len(fetchEvents(t, c, events.FetchFailed)) > 0
	})
	for _, p := range left {
		if exists(p) {
			t.Errorf("the temporary file %s of the killed fetch is still there", p)
		}
	}
	srv.Restart(t)
	eventually(t, 60*time.Second, "the file delivered whole and deleted from the source", func() bool {
		return sameContent(filepath.Join(e.remote, "big.bin"), big) && !exists(filepath.Join(src, "big.bin"))
	})
	agent.stop(10 * time.Second)
	if got := len(c.ofType(events.TypeTransferCompleted)); got != 1 {
		t.Errorf("%d completed events, want 1", got)
	}
	if got := len(fetchEvents(t, c, events.FetchFailed)); got != 1 {
		t.Errorf("%d failed fetch events for one outage, want 1", got)
	}
	if len(temps()) != 0 {
		t.Errorf("temporary files left in the spool: %q", temps())
	}
}

// With a ready marker a file is fetched only once its marker is listed
// too, and the marker is never fetched; after = "move" moves the file into
// move_dir once every target has it, and deletes its marker.
func TestSourceReadyMarkerAndMove(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	src, done := filepath.Join(e.dir, "outgoing"), filepath.Join(e.dir, "done")
	for _, d := range []string{src, done} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	backup := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("backup", backup, "alice", "secret")
	e.sourceFrom("customer", srv, src, "200ms").set("target", "backup").
		set("ready_marker", ".done").set("after", "move").set("move_dir", done)
	e.writeConf()
	data := []byte("orders\n")
	mt := time.Now().Add(-time.Hour).Truncate(time.Second)
	put := func() {
		writeFile(t, filepath.Join(src, "orders.csv"), data)
		if err := os.Chtimes(filepath.Join(src, "orders.csv"), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	put()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	agent.waitLog(20*time.Second, "agent started")
	never(t, 1500*time.Millisecond, "orders.csv fetched before its marker", func() bool {
		return exists(filepath.Join(e.remote, "orders.csv")) || len(fetchEvents(t, c, events.FetchFetched)) > 0
	})
	writeFile(t, filepath.Join(src, "orders.csv.done"), nil)
	eventually(t, 30*time.Second, "orders.csv delivered, moved into move_dir, its marker deleted", func() bool {
		return sameContent(filepath.Join(e.remote, "orders.csv"), data) && sameContent(filepath.Join(done, "orders.csv"), data) &&
			!exists(filepath.Join(src, "orders.csv")) && !exists(filepath.Join(src, "orders.csv.done"))
	})
	eventually(t, 10*time.Second, "a source-deleted event saying where it went", func() bool {
		evs := fetchEvents(t, c, events.FetchSourceDeleted)
		return len(evs) == 1 && evs[0].MovedTo == filepath.Join(done, "orders.csv")
	})

	// Uploaded again under the same name, same size and mtime: a new file
	// all the same (the first one is gone), fetched and delivered again.
	if err := os.Rename(filepath.Join(done, "orders.csv"), filepath.Join(e.dir, "first-orders.csv")); err != nil {
		t.Fatal(err)
	}
	put()
	writeFile(t, filepath.Join(src, "orders.csv.done"), nil)
	eventually(t, 30*time.Second, "the second upload delivered and moved", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) == 2 && sameContent(filepath.Join(done, "orders.csv"), data) &&
			!exists(filepath.Join(src, "orders.csv"))
	})
	agent.stop(10 * time.Second)
	if exists(filepath.Join(e.remote, "orders.csv.done")) {
		t.Error("the marker was delivered")
	}
}
