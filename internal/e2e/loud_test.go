package e2e

// Problems an operator must act on are loud (issue 12, points 2 and 3): a
// file delivered but left in the watch folder, a watch whose readiness
// rests on the settle period alone, a watch folder the agent's user cannot
// read or write.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/internal/sshdtest"
)

// needRoot skips a test that must run the agent (or check) as another user.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the agent can run as another user only when the test runs as root")
	}
}

// readyz fetches /readyz and decodes it.
func readyz(t testing.TB, addr string) (int, map[string]any) {
	t.Helper()
	code, body := get(t, "http://"+addr+"/readyz")
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("/readyz answered %d with %q: %v", code, body, err)
	}
	return code, m
}

// TestPostFailureIsLoud: the agent runs as an unprivileged user, as the
// packaged service does, and an uploader (root here) creates a sub-folder
// with umask 022 in the watch folder. The file in it is delivered through a
// real sshd, and cannot be archived. That is an ERROR in the log, one
// transfer.post-failed event on NATS naming the folder and the fix, a line
// in `dropship status` (and -json), /readyz answering 503 "degraded", and
// the dropship_post_failed_files gauge; the agent tries again with backoff
// (never before the next try status announced), `dropship retry ID` tries
// at once, and once the folder is fixed the next try archives the file and
// every sign clears. The same agent has no CAP_LEASE: its start log and status say
// that the watch's readiness rests on settle alone, and what to do, and so
// does `dropship check`, which reads the running agent's capabilities.
func TestPostFailureIsLoud(t *testing.T) {
	needRoot(t)
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newAttackEnv(t, unprivileged(t))
	n := e.externalNATS()
	e.sshdKeyTarget("sshd", srv, e.remote).
		set("retry_backoff", "300ms").
		set("retry_backoff_max", "1200ms")
	e.watchFolder(e.watch, "sshd")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e.conf.get("[agent]").set("metrics_listen", addr)
	e.writeConf()

	c := collect(t, n.url())
	p := e.startAgent()
	ctl := []string{"-nats", n.url(), "-agent", agentName} // as root: the config's secrets are the agent user's

	// Point 2: no CAP_LEASE is said at start, and in status, per watch.
	if !strings.Contains(p.logs(), "cannot always tell a complete file from one still being written") || !strings.Contains(p.logs(), "CAP_LEASE") {
		t.Errorf("the start log does not say that readiness rests on settle alone without CAP_LEASE:\n%s", p.logs())
	}
	st := status(t, ctl...)
	if len(st.Watches) != 1 || !strings.Contains(st.Watches[0].Risk, "CAP_LEASE") || !strings.Contains(st.Watches[0].Risk, "ready_marker") {
		t.Errorf("status does not show the watch's risk: %+v", st.Watches)
	}

	// check, as the agent's user, reads the running agent's capabilities.
	check := exec.Command(e.bin, "check", "-c", e.cfg)
	check.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(e.u.uid), Gid: uint32(e.u.gid), Groups: []uint32{}}}
	out, err := check.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "watch.path: warning: dropship runs as uid") || strings.Contains(string(out), "unless the agent runs with CAP_LEASE") {
		t.Errorf("check as %s, with the agent running without CAP_LEASE: %v\n%s", e.u.name, err, out)
	}

	// An uploader's sub-folder, mode 0755 and not the agent's.
	sub := filepath.Join(e.watch, "incoming")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	data := []byte("id;amount\n1;42\n")
	src := filepath.Join(sub, "report.csv")
	writeFile(t, src, data)

	eventually(t, 30*time.Second, "the file delivered through sshd", func() bool {
		return sameContent(filepath.Join(e.remote, "incoming", "report.csv"), data)
	})
	var post events.Transfer
	eventually(t, 20*time.Second, "a transfer.post-failed event", func() bool {
		msgs := c.ofType(events.TypeTransferPostFailed)
		if len(msgs) == 0 {
			return false
		}
		post = msgs[0].transfer(t)
		return true
	})
	if post.Error == nil || post.Error.Class != "archive" || !post.Error.Retryable ||
		!strings.Contains(post.Error.Message, "permission denied") || !strings.Contains(post.Error.Message, sub) ||
		!strings.Contains(post.Error.Message, "setgid") || post.NextAttemptAt == nil || post.LocalPath != src {
		t.Errorf("post-failed event: %+v, error %+v", post, post.Error)
	}
	completed := forFile(t, c.ofType(events.TypeTransferCompleted), src)
	if len(completed) != 1 {
		t.Fatalf("%d completed events for the delivered file, want 1", len(completed))
	}
	// Root's file, which the agent could not see open or closed: its
	// events say that it was judged complete on settle alone.
	if d := completed[0].transfer(t); !strings.Contains(d.Warning, "judged complete on settle (300ms) alone") || !strings.Contains(d.Warning, "CAP_LEASE") {
		t.Errorf("completed event's warning %q, want one about readiness resting on settle alone", d.Warning)
	}
	p.waitLog(10*time.Second, "delivered, but post-processing failed")

	// Status: the file, what failed and why.
	var pf agent.PostFailedStatus
	eventually(t, 10*time.Second, "the file in status.post_failed", func() bool {
		st = status(t, ctl...)
		if len(st.PostFailed) != 1 {
			return false
		}
		pf = st.PostFailed[0]
		return true
	})
	if pf.ID != post.TransferID || pf.Path != src || pf.Operation != "archive" || pf.Attempts < 1 || !strings.Contains(pf.Error, "permission denied") {
		t.Errorf("status.post_failed: %+v", pf)
	}
	if st.Watches[0].PostFailed != 1 {
		t.Errorf("watch status: %+v, want post_failed 1", st.Watches[0])
	}
	r := dropship(t, append([]string{"status"}, ctl...)...)
	if !strings.Contains(r.stdout, "POST-FAILED 1") || !strings.Contains(r.stdout, "DELIVERED, NOT ARCHIVED") || !strings.Contains(r.stdout, pf.ID) {
		t.Errorf("status does not show the file delivered but not archived:\n%s", r)
	}

	// /readyz: degraded, with the reason.
	code, body := readyz(t, addr)
	if code != http.StatusServiceUnavailable || body["ready"] != false || body["degraded"] != true || !strings.Contains(fmt.Sprint(body["problems"]), src) {
		t.Errorf("/readyz answered %d %v, want 503, degraded, naming the file", code, body)
	}
	m := scrape(t, addr)
	if v := m[fmt.Sprintf("dropship_post_failed_files{watch=%q}", e.watch)]; v != 1 {
		t.Errorf("dropship_post_failed_files = %v, want 1", v)
	}
	if v := m[fmt.Sprintf("dropship_watch_settle_only{watch=%q}", e.watch)]; v != 1 {
		t.Errorf("dropship_watch_settle_only = %v, want 1 (no CAP_LEASE)", v)
	}
	if v := m[fmt.Sprintf("dropship_post_failures_total{operation=\"archive\",watch=%q}", e.watch)]; v < 1 {
		t.Errorf("dropship_post_failures_total = %v, want at least 1", v)
	}

	// Backoff: a try is never made before the time status announced, and
	// the tries do not come at every sweep.
	start := status(t, ctl...).PostFailed[0]
	var next agent.PostFailedStatus
	eventually(t, 20*time.Second, "two more tries", func() bool {
		st := status(t, ctl...)
		if len(st.PostFailed) != 1 {
			t.Fatalf("post_failed: %+v", st.PostFailed)
		}
		cur := st.PostFailed[0]
		if cur.Attempts == start.Attempts+1 && next.Attempts == 0 {
			next = cur
			if time.Now().Add(100 * time.Millisecond).Before(start.NextTry) {
				t.Errorf("try %d made before %s, the next try status announced", cur.Attempts, start.NextTry.Format(time.StampMilli))
			}
		}
		return cur.Attempts >= start.Attempts+2
	})
	if gap := next.NextTry.Sub(start.NextTry); gap < 200*time.Millisecond {
		t.Errorf("tries %d and %d are due %s apart: no backoff", start.Attempts+1, start.Attempts+2, gap)
	}
	if got := len(c.ofType(events.TypeTransferPostFailed)); got != 1 {
		t.Errorf("%d post-failed events after %d tries with the same error, want 1", got, next.Attempts+1)
	}

	// `dropship retry ID` tries at once (here before the folder is fixed,
	// so that the agent's own next try cannot come first).
	before := status(t, ctl...).PostFailed[0]
	asked := time.Now()
	r = dropship(t, append(append([]string{"retry"}, ctl...), pf.ID)...)
	if r.code != 0 || !strings.Contains(r.stdout, "1 delivered file(s)") {
		t.Errorf("retry of a post-failed file: %s", r)
	}
	after := status(t, ctl...).PostFailed[0]
	if after.Attempts <= before.Attempts {
		t.Errorf("retry made no try: attempts %d before, %d after", before.Attempts, after.Attempts)
	} else if asked.Add(100*time.Millisecond).Before(before.NextTry) && after.Attempts > before.Attempts+1 {
		t.Logf("the agent's own try came too (attempts %d → %d)", before.Attempts, after.Attempts)
	}
	if got := len(c.ofType(events.TypeTransferPostFailed)); got != 1 {
		t.Errorf("%d post-failed events after a retry that failed the same way, want 1", got)
	}

	// The operator fixes the folder: the next try archives the file.
	if err := os.Chmod(sub, 0o777); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the file archived", func() bool {
		return !exists(src) && sameContent(filepath.Join(e.watch, ".dropship-sent", "incoming", "report.csv"), data)
	})
	st = status(t, ctl...)
	if len(st.PostFailed) != 0 || st.Watches[0].PostFailed != 0 {
		t.Errorf("status after the fix: %+v", st)
	}
	if code, body := readyz(t, addr); code != http.StatusOK || body["ready"] != true {
		t.Errorf("/readyz after the fix: %d %v", code, body)
	}
	if v := scrape(t, addr)[fmt.Sprintf("dropship_post_failed_files{watch=%q}", e.watch)]; v != 0 {
		t.Errorf("dropship_post_failed_files after the fix = %v, want 0", v)
	}
	p.stop(15 * time.Second)
}

// TestCheckWatchAsAgentUser: `dropship check` run by root for an agent whose
// state_dir belongs to an unprivileged user (as the packaged service's
// /var/lib/dropship belongs to dropship) checks the watch folders as that
// user. A folder it cannot write while `after` archives, and one it cannot
// even list, are errors (exit status 2, FILE:LINE: watch.path: message,
// naming the user and the fix); a sub-folder it could not archive from, and
// readiness resting on settle without CAP_LEASE, are warnings. Once the
// folders are the user's, check passes.
func TestCheckWatchAsAgentUser(t *testing.T) {
	needRoot(t)
	t.Parallel()
	u := unprivileged(t)
	e := newAttackEnv(t, u)
	e.conf.get("[nats]").set("url", "nats://127.0.0.1:1")
	e.target("partner", "127.0.0.1", 1, "alice").
		set("password_file", e.secretFile("partner.password", "secret\n")).
		set("host_key", otherFingerprint(t))
	unwritable := filepath.Join(e.dir, "unwritable") // root's, 0755: listed, not written
	unreadable := filepath.Join(e.dir, "unreadable") // root's, 0700
	good := filepath.Join(e.dir, "good")             // the agent's
	for dir, mode := range map[string]os.FileMode{unwritable: 0o755, unreadable: 0o700, good: 0o755} {
		if err := os.Mkdir(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	e.chown(good)
	if err := os.Mkdir(filepath.Join(good, "incoming"), 0o755); err != nil { // an uploader's, umask 022
		t.Fatal(err)
	}
	for _, dir := range []string{unwritable, unreadable, good} {
		e.conf.add("[[watch]]").set("path", dir).set("target", "partner").set("settle", "2s")
	}
	e.writeConf()
	line := func(dir string) string {
		b, _ := os.ReadFile(e.cfg)
		n := 0
		for i, l := range strings.Split(string(b), "\n") {
			if l == "[[watch]]" {
				n = i + 1
			}
			if l == fmt.Sprintf("path = %q", dir) {
				return fmt.Sprintf("%s:%d: watch.path: ", e.cfg, n)
			}
		}
		t.Fatalf("no watch of %s in the config", dir)
		return ""
	}

	r := dropship(t, "check", "-c", e.cfg)
	if r.code != 2 {
		t.Errorf("check of watch folders the agent's user cannot use: exit status %d, want 2\n%s", r.code, r)
	}
	for _, want := range []string{
		line(unwritable) + u.name + " (the owner of state_dir",
		"cannot write " + unwritable,
		`this watch archives sent files (after = "archive")`,
		line(unreadable) + u.name,
		"cannot list " + unreadable,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("check does not say %q\n%s", want, r)
		}
	}
	if strings.Contains(r.stderr, line(good)) {
		t.Errorf("check reports an error for a folder the agent's user owns\n%s", r)
	}
	for _, want := range []string{
		"watch folders checked as " + u.name,
		line(good) + "warning: " + u.name + " cannot write the sub-folder(s) " + filepath.Join(good, "incoming"),
		"setgid",
		line(good) + "warning: unless the agent runs with CAP_LEASE",
		"ready_marker",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check does not warn %q\n%s", want, r)
		}
	}

	// The operator gives the folders to the agent's user.
	for _, dir := range []string{unwritable, unreadable, filepath.Join(good, "incoming")} {
		e.chown(dir)
	}
	r = dropship(t, "check", "-c", e.cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "ok") || strings.Contains(r.stdout, "cannot write the sub-folder") {
		t.Errorf("check once the folders are the agent user's: %s", r)
	}
}

// TestReadmeWatchFolderSetup: the watch folder set up as the README's
// install steps say (root's, the agent's group, setgid 2770, and a default
// ACL giving that group rwx) lets the agent, running as its own user,
// archive a file from a sub-folder an uploader created with umask 022;
// `dropship check` (as root) has nothing to warn about that sub-folder, and
// no post-failed event comes.
func TestReadmeWatchFolderSetup(t *testing.T) {
	needRoot(t)
	setfacl, err := exec.LookPath("setfacl")
	if err != nil {
		if os.Getenv("DROPSHIP_REQUIRE_SSHD") != "" {
			t.Fatal("setfacl (package acl) is needed: .ci/run installs it")
		}
		t.Skip("no setfacl (package acl)")
	}
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	u := unprivileged(t)
	e := newAttackEnv(t, u)
	n := e.externalNATS()
	e.sshdKeyTarget("sshd", srv, e.remote)
	e.watchFolder(e.watch, "sshd")
	e.writeConf()
	group, err := user.LookupGroupId(strconv.Itoa(u.gid))
	if err != nil {
		t.Fatal(err)
	}
	// sudo install -d -o root -g dropship -m 2770 /srv/drop/acme
	if err := os.Chown(e.watch, 0, u.gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(e.watch, 0o2770); err != nil {
		t.Fatal(err)
	}
	// sudo setfacl -m g:dropship:rwx,d:g:dropship:rwx /srv/drop/acme
	if out, err := exec.Command(setfacl, "-m", fmt.Sprintf("g:%s:rwx,d:g:%s:rwx", group.Name, group.Name), e.watch).CombinedOutput(); err != nil {
		if strings.Contains(string(out), "Operation not supported") {
			t.Skipf("the test folder's file system has no ACLs: %s", out)
		}
		t.Fatalf("setfacl: %v: %s", err, out)
	}
	// An uploader with the usual umask creates a sub-folder and a file.
	data := []byte("2026-12-04;ok\n")
	cmd := exec.Command("sh", "-c", `umask 022 && mkdir sub && printf '%s' "$DATA" > sub/day.csv`)
	cmd.Dir, cmd.Env = e.watch, append(os.Environ(), "DATA="+string(data))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("upload: %v: %s", err, out)
	}
	// As the service's user (sudo -u dropship dropship check): the secrets
	// are its own.
	check := exec.Command(e.bin, "check", "-c", e.cfg)
	check.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}}}
	out, err := check.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "watch folders checked as "+u.name) || strings.Contains(string(out), "cannot write the sub-folder") {
		t.Errorf("check of the README's setup, as %s: %v\n%s", u.name, err, out)
	}

	c := collect(t, n.url())
	e.startAgent()
	src := filepath.Join(e.watch, "sub", "day.csv")
	eventually(t, 30*time.Second, "the file delivered and archived", func() bool {
		return sameContent(filepath.Join(e.remote, "sub", "day.csv"), data) && !exists(src) &&
			sameContent(filepath.Join(e.watch, ".dropship-sent", "sub", "day.csv"), data)
	})
	if got := c.ofType(events.TypeTransferPostFailed); len(got) != 0 {
		t.Errorf("post-failed events with the README's setup: %d", len(got))
	}
}
