package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
)

// One file, one transfer id (issue 17 point 5): an agent restarted while its
// target is retrying keeps the file's transfer id, the id ends completed once
// the target is back, no second id is ever made for the same version, and no
// temporary file is left on the remote.
func TestRestartWhileRetryingKeepsTheTransferID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	port := freePort(t)
	// Nothing listens yet: connect-refused, retried.
	e.target("late", "127.0.0.1", port, "alice").
		set("password_file", e.secretFile("late.password", "Vq3-late-Zx\n")).
		set("host_key", "accept-new")
	e.watchFor("late")
	e.writeConf()
	c := collect(t, n.url())
	a := startAgent(t, e.cfg)
	files := []string{"a.txt", "b.txt", "c.txt"}
	for _, f := range files {
		writeFile(t, filepath.Join(e.watch, f), []byte("content of "+f))
	}
	eventually(t, 20*time.Second, "every file retrying", func() bool {
		seen := map[string]bool{}
		for _, m := range c.ofType(events.TypeTransferRetrying) {
			seen[filepath.Base(m.transfer(t).LocalPath)] = true
		}
		return len(seen) == len(files)
	})
	a.stop(10 * time.Second)
	// A second restart, while still retrying.
	a = startAgent(t, e.cfg)
	eventually(t, 20*time.Second, "retrying after the restart", func() bool {
		return len(c.ofType(events.TypeTransferRetrying)) > 2*len(files)
	})
	a.stop(10 * time.Second)
	a = startAgent(t, e.cfg)

	srv, err := sftpd.New(sftpd.Config{
		Listen: fmt.Sprintf("127.0.0.1:%d", port),
		Home:   e.remote,
		Users:  map[string]sftpd.Account{"alice": {Password: "Vq3-late-Zx"}},
	})
	if err != nil {
		t.Fatalf("start sftpd on the target's port: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	eventually(t, 30*time.Second, "every file delivered", func() bool {
		for _, f := range files {
			if !sameContent(filepath.Join(e.remote, f), []byte("content of "+f)) {
				return false
			}
		}
		return len(c.ofType(events.TypeTransferCompleted)) >= len(files)
	})
	a.stop(10 * time.Second)

	// Every event of a file carries one transfer id, and it completed once.
	ids := map[string]map[string]bool{}
	for _, m := range c.all() {
		switch m.ev.Type {
		case events.TypeTransferQueued, events.TypeTransferStarted, events.TypeTransferRetrying, events.TypeTransferCompleted, events.TypeTransferFailed:
		default:
			continue
		}
		d := m.transfer(t)
		f := filepath.Base(d.LocalPath)
		if ids[f] == nil {
			ids[f] = map[string]bool{}
		}
		ids[f][d.TransferID] = true
	}
	for _, f := range files {
		if len(ids[f]) != 1 {
			t.Errorf("%s had %d transfer ids, want 1: %v", f, len(ids[f]), ids[f])
		}
	}
	if got := len(c.ofType(events.TypeTransferCompleted)); got != len(files) {
		t.Errorf("%d completed events, want %d", got, len(files))
	}
	if p := partials(e.remote); len(p) != 0 {
		t.Errorf("temporary files left on the remote: %q", p)
	}
}

// `dropship retry -failed` asked again and again after a refused login never
// logs in sooner than the target's backoff allows (issue 17 point 5): it
// queues the files and says when the target is tried again.
func TestRetryRespectsTheLoginBackoff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sftpd.New(sftpd.Config{
		HostKey: signer,
		Home:    e.remote,
		Users:   map[string]sftpd.Account{"alice": {Password: "the-right-Pw9"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	e.sftpdTarget("locked", srv, "alice", "a-wrong-Pw7").
		set("retry_backoff", "30s").
		set("retry_backoff_max", "2m")
	e.watchFor("locked")
	e.writeConf()
	c := collect(t, n.url())
	a := startAgent(t, e.cfg)
	writeFile(t, filepath.Join(e.watch, "x.txt"), []byte("x"))
	eventually(t, 20*time.Second, "the file failed as auth", func() bool {
		for _, m := range c.ofType(events.TypeTransferFailed) {
			if d := m.transfer(t); d.Error != nil && d.Error.Class == "auth" {
				return true
			}
		}
		return false
	})
	before := srv.Stats().AuthAttempts["password"]
	var last result
	for range 20 {
		last = dropship(t, "retry", "-c", e.cfg, "-failed")
	}
	if last.code != 0 {
		t.Fatalf("retry -failed: %s", last)
	}
	if !strings.Contains(last.stdout, "tried again at") {
		t.Errorf("retry does not say when the target is tried again:\n%s", last)
	}
	// Give a wrongly eager agent the time to log in.
	never(t, 3*time.Second, "another login attempt", func() bool {
		return srv.Stats().AuthAttempts["password"] > before
	})
	a.stop(10 * time.Second)
	if got := srv.Stats().AuthAttempts["password"]; got > 1 {
		t.Errorf("%d password attempts at the server, want 1", got)
	}
	_ = os.Remove(e.cfg)
}

// Failed for good means failed once (issue 12 point 5): after retry_max a
// file gets one failed event; the probes of its target that follow, and fail
// the same way, publish nothing more for it.
func TestFailedForGoodIsFailedOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	e.target("down", "127.0.0.1", freePort(t), "alice").
		set("host_key", "accept-new").
		set("retry_max", 3)
	e.watchFor("down")
	e.writeConf()
	c := collect(t, n.url())
	startAgent(t, e.cfg)
	p := filepath.Join(e.watch, "x.txt")
	writeFile(t, p, []byte("x"))
	eventually(t, 20*time.Second, "the file failed for good", func() bool {
		return len(forFile(t, c.ofType(events.TypeTransferFailed), p)) > 0
	})
	// Probes run every second (retry_backoff_max): give them time.
	never(t, 4*time.Second, "another failed or started event for the file", func() bool {
		return len(forFile(t, c.ofType(events.TypeTransferFailed), p)) > 1 ||
			len(forFile(t, c.ofType(events.TypeTransferStarted), p)) > 3
	})
	failed := forFile(t, c.ofType(events.TypeTransferFailed), p)
	d := failed[0].transfer(t)
	if d.Attempt != 3 || d.Error == nil || d.Error.Class != "connect-refused" || strings.HasPrefix(d.Error.Message, "connect-refused:") {
		t.Errorf("failed event: attempt %d, error %+v; want attempt 3, class connect-refused once", d.Attempt, d.Error)
	}
}
