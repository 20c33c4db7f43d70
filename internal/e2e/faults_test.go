package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// The fault tests of issue 5: real processes fail the way they do in
// production, and the durability promises of DESIGN.md hold.

// completedPerTransfer groups the completed events of msgs by transfer id:
// the distinct event ids of each.
func completedPerTransfer(t testing.TB, msgs []received) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	for _, m := range filterType(msgs, events.TypeTransferCompleted) {
		id := m.transfer(t).TransferID
		if out[id] == nil {
			out[id] = map[string]bool{}
		}
		out[id][m.ev.ID] = true
	}
	return out
}

// checkOrder checks that the lifecycle events of every transfer in msgs
// come in order: queued first, completed (if any) last, and only started
// and retrying events in between.
func checkOrder(t testing.TB, msgs []received) {
	t.Helper()
	states := map[string][]events.TransferState{}
	for _, m := range msgs {
		if st, ok := m.ev.TransferState(); ok {
			id := m.transfer(t).TransferID
			states[id] = append(states[id], st)
		}
	}
	for id, sts := range states {
		ok := sts[0] == events.TransferQueued
		for i, st := range sts[1:] {
			last := i == len(sts)-2
			switch st {
			case events.TransferStarted, events.TransferRetrying:
			case events.TransferCompleted, events.TransferFailed:
				ok = ok && last
			default:
				ok = false
			}
		}
		if !ok {
			t.Errorf("transfer %s: lifecycle events in the order %v", id, sts)
		}
	}
}

// TestKillDuringTransfer kills the agent with SIGKILL in the middle of a
// large upload and starts it again: the file arrives once, byte-identical,
// nothing partial ever shows under its final name, and it has exactly one
// completed event id, live and in the stream.
func TestKillDuringTransfer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	srv.SetFaults(sftpd.Faults{WriteDelay: 300 * time.Millisecond})
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	data := randomBytes(t, 8<<20)
	src := filepath.Join(e.watch, "large.bin")
	final := filepath.Join(e.remote, "large.bin")
	writeFile(t, src, data)

	eventually(t, 30*time.Second, "the upload under way", func() bool {
		return len(c.ofType(events.TypeTransferStarted)) > 0 && len(partials(e.remote)) > 0
	})
	agent.kill9()
	if exists(final) {
		t.Fatal("the file is under its final remote name although the upload was killed")
	}
	if !sameContent(src, data) {
		t.Fatal("the source changed or moved although it was not delivered")
	}

	srv.SetFaults(sftpd.Faults{WriteDelay: time.Millisecond})
	agent = startAgent(t, e.cfg)
	eventually(t, 60*time.Second, "the file delivered after the restart", func() bool {
		if exists(final) && !sameContent(final, data) {
			t.Fatal("something other than the complete file is under the final remote name")
		}
		return sameContent(final, data) && !exists(src)
	})
	agent.stop(10 * time.Second)

	if p := partials(e.remote); len(p) > 0 {
		t.Errorf("temporary files left on the remote: %q", p)
	}
	stored := completedPerTransfer(t, storedEvents(t, n.url()))
	live := completedPerTransfer(t, c.all())
	for what, got := range map[string]map[string]map[string]bool{"the stream": stored, "a subscriber": live} {
		if len(got) != 1 {
			t.Errorf("%s has completed events for %d transfers, want 1", what, len(got))
		}
		for id, evs := range got {
			if len(evs) != 1 {
				t.Errorf("%s has %d different completed event ids for transfer %s, want 1", what, len(evs), id)
			}
		}
	}
	if got := len(filterType(storedEvents(t, n.url()), events.TypeTransferCompleted)); got != 1 {
		t.Errorf("the stream holds %d completed events, want 1", got)
	}
	checkOrder(t, storedEvents(t, n.url()))
}

// TestNATSOutage stops the NATS server while 100 files flow and starts it
// again on the same port with the same store: the files keep arriving, and
// afterwards the stream holds a completed event for each of the 100, with
// duplicates (if any) only under the same id.
func TestNATSOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)

	const files = 100
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range files {
			p := filepath.Join(e.watch, fmt.Sprintf("file-%03d.txt", i))
			if err := os.WriteFile(p, fmt.Appendf(nil, "file %d\n", i), 0o644); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	t.Cleanup(wg.Wait)
	arrived := func() int { return len(names(e.remote)) - len(partials(e.remote)) }

	eventually(t, 30*time.Second, "the first completed events", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) >= 10
	})
	n.stop()
	before := arrived()
	eventually(t, 30*time.Second, "files delivered while NATS is down", func() bool {
		return arrived() >= before+10
	})
	n.restart()
	wg.Wait()

	eventually(t, 60*time.Second, "all files delivered", func() bool { return arrived() == files })
	eventually(t, 60*time.Second, "a completed event for every file in the stream", func() bool {
		return len(completedPerTransfer(t, storedEvents(t, n.url()))) == files
	})
	agent.stop(10 * time.Second)

	stored := storedEvents(t, n.url())
	for id, evs := range completedPerTransfer(t, stored) {
		if len(evs) != 1 {
			t.Errorf("the stream has %d different completed event ids for transfer %s", len(evs), id)
		}
	}
	if got := len(filterType(stored, events.TypeTransferCompleted)); got != files {
		t.Errorf("the stream holds %d completed events, want %d (JetStream drops a republished id)", got, files)
	}
	for id, evs := range completedPerTransfer(t, c.all()) {
		if len(evs) != 1 {
			t.Errorf("a subscriber got %d different completed event ids for transfer %s", len(evs), id)
		}
	}
	checkOrder(t, stored)
}

// TestNATSDownAtStart starts the agent while its NATS server is down: it
// starts all the same, delivers files, and once the server is up it creates
// the stream and publishes the events it kept in its outbox.
func TestNATSDownAtStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()
	n.stop()

	agent := startAgent(t, e.cfg)
	files := map[string][]byte{"one.txt": []byte("1\n"), "two.txt": []byte("2\n")}
	for name, data := range files {
		writeFile(t, filepath.Join(e.watch, name), data)
	}
	eventually(t, 30*time.Second, "files delivered without NATS", func() bool {
		for name, data := range files {
			if !sameContent(filepath.Join(e.remote, name), data) {
				return false
			}
		}
		return true
	})
	n.restart()
	eventually(t, 30*time.Second, "the completed events stored once NATS is up", func() bool {
		return streamExists(t, n.url()) && len(completedPerTransfer(t, storedEvents(t, n.url()))) == len(files)
	})
	agent.stop(10 * time.Second)
	checkOrder(t, storedEvents(t, n.url()))
}

// TestSSHDOutage stops sshd while files flow and starts it again: every file
// arrives, intact, and is archived.
func TestSSHDOutage(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	e.sshdTarget(srv)
	e.watchFor("sshd")
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)

	const files = 30
	content := func(i int) []byte { return fmt.Appendf(nil, "file %d of the outage test\n", i) }
	drop := func(from, to int) {
		for i := from; i < to; i++ {
			writeFile(t, filepath.Join(e.watch, fmt.Sprintf("f%02d.txt", i)), content(i))
			time.Sleep(30 * time.Millisecond)
		}
	}
	arrived := func() int { return len(names(e.remote)) - len(partials(e.remote)) }

	drop(0, 10)
	eventually(t, 30*time.Second, "the first files delivered", func() bool { return arrived() >= 3 })
	srv.Stop()
	drop(10, 20)
	eventually(t, 30*time.Second, "a retrying event while sshd is down", func() bool {
		return len(c.ofType(events.TypeTransferRetrying)) > 0 || len(c.ofType(events.TypeTransferFailed)) > 0
	})
	srv.Restart(t)
	drop(20, files)

	eventually(t, 60*time.Second, "every file delivered and archived", func() bool {
		for i := range files {
			name := fmt.Sprintf("f%02d.txt", i)
			if !sameContent(filepath.Join(e.remote, name), content(i)) || exists(filepath.Join(e.watch, name)) {
				return false
			}
		}
		return true
	})
	agent.stop(10 * time.Second)
	if p := partials(e.remote); len(p) > 0 {
		t.Errorf("temporary files left on the remote: %q", p)
	}
	if got := len(completedPerTransfer(t, storedEvents(t, n.url()))); got != files {
		t.Errorf("completed events for %d transfers, want %d", got, files)
	}
}

// TestWrongPassword: the server refuses the password. It is tried once, a
// failed event of class auth is published, the agent does not loop (over
// several retry_backoff periods the server sees no further attempt, even
// with a second file waiting), `dropship status` shows the target failing,
// and the sources stay where they are.
func TestWrongPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "the right one")
	e.sftpdTarget("partner", srv, "alice", "a wrong one").
		set("retry_backoff", "200ms").
		set("retry_backoff_max", "1m")
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, n.url())
	startAgent(t, e.cfg)
	first := filepath.Join(e.watch, "first.txt")
	writeFile(t, first, []byte("one\n"))
	eventually(t, 30*time.Second, "a failed event", func() bool {
		return len(c.ofType(events.TypeTransferFailed)) > 0
	})
	if d := c.ofType(events.TypeTransferFailed)[0].transfer(t); d.Error == nil || d.Error.Class != "auth" {
		t.Errorf("failed event error %+v, want class auth", d.Error)
	}
	second := filepath.Join(e.watch, "second.txt")
	writeFile(t, second, []byte("two\n"))

	never(t, 3*time.Second, "the agent tried the refused password again", func() bool {
		return srv.Stats().AuthAttempts["password"] > 1
	})
	if got := srv.Stats().AuthAttempts["password"]; got != 1 {
		t.Errorf("sftpd saw %d password attempts, want exactly 1", got)
	}
	if got := len(c.ofType(events.TypeTransferStarted)); got != 1 {
		t.Errorf("%d started events, want 1: the held queue was tried", got)
	}
	ts := targetStatus(t, status(t, "-nats", n.url(), "-agent", agentName), "partner")
	if ts.State != "failing" || ts.Class != "auth" {
		t.Errorf("target status %+v, want failing with class auth", ts)
	}
	if ts.Failed+ts.Queued != 2 {
		t.Errorf("target status counts %d failed and %d queued, want the 2 files", ts.Failed, ts.Queued)
	}
	for _, p := range []string{first, second} {
		if !exists(p) {
			t.Errorf("%s left the drop folder although it was not delivered", p)
		}
	}
	if got := names(e.remote); len(got) != 0 {
		t.Errorf("remote folder holds %q", got)
	}
}

// TestFixedPasswordReload: after a refused password, the operator writes the
// right one into password_file and reloads (SIGHUP) without changing the
// config file: the held files are sent.
func TestFixedPasswordReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	srv := sftpdServer(t, e.remote, "alice", "the right one")
	e.externalNATS()
	tgt := e.sftpdTarget("partner", srv, "alice", "a wrong one").
		set("retry_backoff", "200ms").
		set("retry_backoff_max", "1m")
	e.watchFor("partner")
	e.writeConf()

	agent := startAgent(t, e.cfg)
	data := []byte("held by a wrong password\n")
	writeFile(t, filepath.Join(e.watch, "held.txt"), data)
	eventually(t, 30*time.Second, "the refused login", func() bool { return srv.Stats().AuthFailures["password"] > 0 })

	pw := filepath.Join(e.dir, "partner.password")
	if tgt.vals["password_file"] != fmt.Sprintf("%q", pw) {
		t.Fatalf("password_file is %s, not %s", tgt.vals["password_file"], pw)
	}
	if err := os.WriteFile(pw, []byte("the right one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agent.signal(syscall.SIGHUP)
	agent.waitLog(10*time.Second, "configuration reloaded")
	eventually(t, 8*time.Second, "the held file delivered with the corrected password", func() bool {
		return sameContent(filepath.Join(e.remote, "held.txt"), data)
	})
}

// TestRemoteNotWritable: the server refuses every write. The attempts fail
// with class remote-permission (failed or retrying events), nothing arrives,
// and the sources stay untouched in the drop folder.
func TestRemoteNotWritable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	srv.SetFaults(sftpd.Faults{DenyWrite: true})
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, n.url())
	startAgent(t, e.cfg)
	files := map[string][]byte{"a.txt": []byte("a\n"), "b.txt": []byte("b\n")}
	stats := map[string]os.FileInfo{}
	for name, data := range files {
		p := filepath.Join(e.watch, name)
		writeFile(t, p, data)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		stats[name] = fi
	}
	eventually(t, 30*time.Second, "failed or retrying events", func() bool {
		return len(c.ofType(events.TypeTransferFailed))+len(c.ofType(events.TypeTransferRetrying)) > 0
	})
	for _, m := range append(c.ofType(events.TypeTransferFailed), c.ofType(events.TypeTransferRetrying)...) {
		if d := m.transfer(t); d.Error == nil || d.Error.Class != "remote-permission" {
			t.Errorf("%s event error %+v, want class remote-permission", m.ev.Type, d.Error)
		}
	}
	// Over a few probes at retry_backoff, the sources stay as they were.
	never(t, 2*time.Second, "a source was touched although it was never delivered", func() bool {
		for name, data := range files {
			p := filepath.Join(e.watch, name)
			fi, err := os.Stat(p)
			if err != nil || !sameContent(p, data) || !fi.ModTime().Equal(stats[name].ModTime()) || !os.SameFile(fi, stats[name]) {
				return true
			}
		}
		return false
	})
	if got := names(e.remote); len(got) != 0 {
		t.Errorf("remote folder holds %q", got)
	}
	if got := len(c.ofType(events.TypeTransferCompleted)); got != 0 {
		t.Errorf("%d completed events", got)
	}
}

// TestOutboxSurvivesCrash: with NATS down, a file is delivered and its
// events wait in the outbox; the agent is then killed with SIGKILL. Started
// again with NATS back, it publishes them: the stream gets the file's
// completed event, once.
func TestOutboxSurvivesCrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()

	agent := startAgent(t, e.cfg)
	eventually(t, 10*time.Second, "the stream created", func() bool { return streamExists(t, n.url()) })
	n.stop()
	data := []byte("delivered while NATS was down\n")
	writeFile(t, filepath.Join(e.watch, "outbox.txt"), data)
	eventually(t, 30*time.Second, "the file delivered and archived", func() bool {
		return sameContent(filepath.Join(e.remote, "outbox.txt"), data) && !exists(filepath.Join(e.watch, "outbox.txt"))
	})
	agent.kill9()

	n.restart()
	agent = startAgent(t, e.cfg)
	eventually(t, 30*time.Second, "the completed event published after the restart", func() bool {
		return len(completedPerTransfer(t, storedEvents(t, n.url()))) == 1
	})
	agent.stop(10 * time.Second)
	stored := storedEvents(t, n.url())
	if got := len(filterType(stored, events.TypeTransferCompleted)); got != 1 {
		t.Errorf("%d completed events stored, want 1", got)
	}
	if d := filterType(stored, events.TypeTransferCompleted)[0].transfer(t); d.SHA256 != sha256Hex(data) || d.SizeBytes != int64(len(data)) {
		t.Errorf("completed event: %d bytes, sha256 %s", d.SizeBytes, d.SHA256)
	}
	checkOrder(t, stored)
	if got := srv.Stats().Sessions; got != 1 {
		t.Errorf("sftpd saw %d SFTP sessions, want 1: the delivered file was sent again", got)
	}
}

// TestKeepIsNotResent: with after = "keep", a delivered file stays in the
// drop folder; a restarted agent does not send it again, but does send it
// once it changes.
func TestKeepIsNotResent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner").set("after", "keep")
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	src := filepath.Join(e.watch, "kept.txt")
	writeFile(t, src, []byte("version 1\n"))
	eventually(t, 30*time.Second, "the first version delivered", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) == 1
	})
	agent.stop(10 * time.Second)

	agent = startAgent(t, e.cfg)
	never(t, 2*time.Second, "a kept, unchanged file was queued again after a restart", func() bool {
		return len(c.ofType(events.TypeTransferQueued)) > 1
	})
	v2 := []byte("version 2, longer\n")
	writeFile(t, src, v2)
	eventually(t, 30*time.Second, "the changed file delivered", func() bool {
		return sameContent(filepath.Join(e.remote, "kept.txt"), v2) && len(c.ofType(events.TypeTransferCompleted)) == 2
	})
	agent.stop(10 * time.Second)
	if !sameContent(src, v2) {
		t.Error(`after = "keep" did not keep the source`)
	}
}

// TestHostKeyChanged: the sshd's host key changes between two files (a
// rotated key, or a man in the middle). With host_key = "strict" the second
// file is refused with class hostkey-changed and stays in the drop folder.
func TestHostKeyChanged(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	e.sshdTarget(srv)
	e.watchFor("sshd")
	e.writeConf()

	c := collect(t, n.url())
	startAgent(t, e.cfg)
	writeFile(t, filepath.Join(e.watch, "before.txt"), []byte("before\n"))
	eventually(t, 30*time.Second, "the first file delivered", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) == 1
	})
	srv.RotateHostKey(t)
	after := filepath.Join(e.watch, "after.txt")
	writeFile(t, after, []byte("after\n"))
	eventually(t, 30*time.Second, "a failed event", func() bool {
		return len(c.ofType(events.TypeTransferFailed)) > 0
	})
	if d := c.ofType(events.TypeTransferFailed)[0].transfer(t); d.Error == nil || d.Error.Class != "hostkey-changed" {
		t.Errorf("failed event error %+v, want class hostkey-changed", d.Error)
	}
	if exists(filepath.Join(e.remote, "after.txt")) || !exists(after) {
		t.Error("a file was sent to a server whose host key changed")
	}
}

// TestRemoteDirMissing: remote_dir does not exist on the server. The
// attempt fails with class remote-path, which names the fix (check
// remote_dir), and the source stays in the drop folder.
func TestRemoteDirMissing(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	e.sshdTarget(srv).set("remote_dir", filepath.Join(e.dir, "no such folder"))
	e.watchFor("sshd")
	e.writeConf()

	c := collect(t, n.url())
	startAgent(t, e.cfg)
	src := filepath.Join(e.watch, "lost.txt")
	writeFile(t, src, []byte("where to?\n"))
	eventually(t, 30*time.Second, "a failed or retrying event", func() bool {
		return len(c.ofType(events.TypeTransferFailed))+len(c.ofType(events.TypeTransferRetrying)) > 0
	})
	for _, m := range append(c.ofType(events.TypeTransferFailed), c.ofType(events.TypeTransferRetrying)...) {
		if d := m.transfer(t); d.Error == nil || d.Error.Class != "remote-path" {
			t.Errorf("%s event error %+v, want class remote-path", m.ev.Type, d.Error)
		}
	}
	if !exists(src) {
		t.Error("the source left the drop folder although it was not delivered")
	}
}
