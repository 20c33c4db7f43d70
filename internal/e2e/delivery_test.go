package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sshdtest"
)

// writeSlowly writes data to p in chunks with a pause after each but the
// last, keeping the file open throughout, as a slow upload does. It returns
// when the file is closed.
func writeSlowly(t testing.TB, p string, data []byte, chunks int, pause time.Duration) time.Time {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	size := (len(data) + chunks - 1) / chunks
	for off := 0; off < len(data); off += size {
		if off > 0 {
			time.Sleep(pause)
		}
		if _, err := f.Write(data[off:min(off+size, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// sshdTarget adds a target for the real sshd: key login, host key "strict"
// against a known_hosts file holding the server's key.
func (e *env) sshdTarget(srv *sshdtest.Server) *table {
	e.t.Helper()
	kh := filepath.Join(e.dir, "known_hosts")
	srv.WriteKnownHosts(e.t, kh)
	return e.target("sshd", srv.Host, srv.Port, srv.User).
		set("identity_file", srv.ClientKey).
		set("host_key", "strict").
		set("known_hosts_file", kh)
}

// TestDeliveryThroughSSHD is the walking skeleton end to end: the built
// agent, a real sshd (key login, strict host key) and a real NATS server.
// A file present at start and three dropped while the agent runs (one with a
// space in its name, one of several MiB written slowly) each arrive
// byte-identical under their own names, are archived, and yield exactly one
// completed event each with the right size and sha256, in the envelope of
// DESIGN.md, and stored in JetStream; the OpenSSH output is published as log
// events.
func TestDeliveryThroughSSHD(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	e.sshdTarget(srv)
	e.watchFor("sshd")
	e.writeConf()

	files := map[string][]byte{
		"present at start.txt": []byte("I was here before the agent\n"),
		"hello world.txt":      []byte("hello, world\n"),
		"report.csv":           []byte(strings.Repeat("id,name,amount\n1,widget,3.50\n", 1000)),
		"big.bin":              randomBytes(t, 6<<20),
	}
	writeFile(t, filepath.Join(e.watch, "present at start.txt"), files["present at start.txt"])

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)

	writeFile(t, filepath.Join(e.watch, "hello world.txt"), files["hello world.txt"])
	writeFile(t, filepath.Join(e.watch, "report.csv"), files["report.csv"])
	// Pauses longer than settle: only the open file descriptor tells the
	// watcher that the file is not complete yet.
	bigDone := writeSlowly(t, filepath.Join(e.watch, "big.bin"), files["big.bin"], 4, 450*time.Millisecond)

	archive := filepath.Join(e.watch, ".dropship-sent")
	eventually(t, 60*time.Second, "every file delivered and archived", func() bool {
		for name, data := range files {
			if !sameContent(filepath.Join(e.remote, name), data) || !sameContent(filepath.Join(archive, name), data) || exists(filepath.Join(e.watch, name)) {
				return false
			}
		}
		return true
	})
	eventually(t, 10*time.Second, "four completed events", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) >= 4
	})
	agent.stop(10 * time.Second) // publishes whatever is left in the outbox

	if p := partials(e.remote); len(p) > 0 {
		t.Errorf("temporary files left on the remote: %q", p)
	}
	if got := names(e.remote); len(got) != len(files) {
		t.Errorf("remote folder holds %q, want exactly the %d files sent", got, len(files))
	}

	all := c.all()
	completedIDs := map[string]bool{}
	for name, data := range files {
		local := filepath.Join(e.watch, name)
		lifecycle := forFile(t, all, local)
		var states []events.TransferState
		for _, m := range lifecycle {
			st, _ := m.ev.TransferState()
			states = append(states, st)
		}
		want := []events.TransferState{events.TransferQueued, events.TransferStarted, events.TransferCompleted}
		if !slices.Equal(states, want) {
			t.Errorf("%s: lifecycle events %v, want %v", name, states, want)
		}
		completed := filterType(lifecycle, events.TypeTransferCompleted)
		if len(completed) != 1 {
			t.Errorf("%s: %d completed events, want exactly 1", name, len(completed))
			continue
		}
		m := completed[0]
		completedIDs[m.ev.ID] = true
		checkEnvelope(t, m, "sshd", events.TransferCompleted)
		d := m.transfer(t)
		if d.SizeBytes != int64(len(data)) || d.SHA256 != sha256Hex(data) {
			t.Errorf("%s: completed event says %d bytes, sha256 %s; want %d bytes, sha256 %s", name, d.SizeBytes, d.SHA256, len(data), sha256Hex(data))
		}
		if want := filepath.Join(e.remote, name); d.RemotePath != want {
			t.Errorf("%s: remote_path %q, want %q", name, d.RemotePath, want)
		}
		if d.Watch != e.watch || d.Agent != agentName || d.Attempt != 1 || d.ExitCode == nil || *d.ExitCode != 0 ||
			d.Target.Name != "sshd" || d.Target.Host != srv.Host || d.Target.Port != srv.Port {
			t.Errorf("%s: completed event data %+v", name, d)
		}
		for _, m := range lifecycle {
			if id := m.transfer(t).TransferID; id != d.TransferID {
				t.Errorf("%s: transfer_id %s in a %s event, %s in the completed one", name, id, m.ev.Type, d.TransferID)
			}
		}
	}

	// The big file was not judged ready while it was being written.
	if q := filterType(forFile(t, all, filepath.Join(e.watch, "big.bin")), events.TypeTransferQueued); len(q) > 0 && q[0].ev.Time.Before(bigDone) {
		t.Errorf("big.bin was queued at %s, before its writer closed it at %s", q[0].ev.Time, bigDone)
	}

	logs := c.ofType(events.TypeLog)
	if len(logs) == 0 {
		t.Error("no log events: the OpenSSH client's lines were not published")
	}
	for _, m := range logs {
		if m.subject != prefix+"."+agentName+".sshd.log" {
			t.Errorf("log event on subject %s", m.subject)
		}
		if _, err := m.ev.Log(); err != nil {
			t.Errorf("log event: %v\n%s", err, m.raw)
		}
	}

	// Durable: JetStream holds the same completed events.
	stored := filterType(storedEvents(t, n.url()), events.TypeTransferCompleted)
	if got := uniqueIDs(stored); len(got) != len(completedIDs) || len(stored) != len(completedIDs) {
		t.Errorf("stream holds %d completed events (%d ids), want the %d the subscriber saw", len(stored), len(got), len(completedIDs))
	}
	for _, m := range stored {
		if !completedIDs[m.ev.ID] {
			t.Errorf("stream holds completed event %s the subscriber did not see", m.ev.ID)
		}
	}

}

// checkEnvelope checks the CloudEvents envelope of a transfer lifecycle
// event as DESIGN.md promises it.
func checkEnvelope(t testing.TB, m received, target string, state events.TransferState) {
	t.Helper()
	obj := jsonObject(t, m.raw)
	for _, k := range []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"} {
		if _, ok := obj[k]; !ok {
			t.Errorf("event %s has no %q attribute:\n%s", m.ev.ID, k, m.raw)
		}
	}
	ev := m.ev
	if ev.SpecVersion != "1.0" || ev.Source != "/dropship/"+agentName || ev.Type != "dev.dropship.transfer."+string(state) || ev.DataContentType != "application/json" {
		t.Errorf("envelope specversion %q source %q type %q datacontenttype %q", ev.SpecVersion, ev.Source, ev.Type, ev.DataContentType)
	}
	if want := prefix + "." + agentName + "." + target + ".transfer." + string(state); m.subject != want {
		t.Errorf("event %s on subject %s, want %s", ev.ID, m.subject, want)
	}
	if m.msgID != ev.ID {
		t.Errorf("Nats-Msg-Id header %q, event id %q", m.msgID, ev.ID)
	}
	if ev.Time.IsZero() || time.Since(ev.Time) > 10*time.Minute || time.Until(ev.Time) > time.Minute {
		t.Errorf("event %s has time %s", ev.ID, ev.Time)
	}
	d := m.transfer(t)
	if ev.Subject != d.LocalPath {
		t.Errorf("event subject %q, local_path %q", ev.Subject, d.LocalPath)
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(obj["data"], &data); err != nil {
		t.Fatalf("event data is not an object: %v", err)
	}
	for _, k := range []string{"transfer_id", "attempt", "agent", "watch", "target", "local_path", "remote_path", "size_bytes", "sha256",
		"started_at", "finished_at", "duration_seconds", "bytes_per_second", "exit_code"} {
		if _, ok := data[k]; !ok {
			t.Errorf("event %s data has no %q:\n%s", ev.ID, k, obj["data"])
		}
	}
	if state == events.TransferCompleted && (d.TransferID == "" || d.StartedAt == nil || d.FinishedAt == nil || d.FinishedAt.Before(*d.StartedAt)) {
		t.Errorf("event %s data: transfer_id %q started_at %v finished_at %v", ev.ID, d.TransferID, d.StartedAt, d.FinishedAt)
	}
}

// TestHostileNames drops files whose names a shell, a glob or an sftp batch
// would misread: each arrives under exactly its own name, a newline or a
// carriage return included (the engine speaks SFTP itself: names are never
// command lines), and none is run as a command.
func TestHostileNames(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	e.sshdTarget(srv)
	e.watchFor("sshd")
	e.writeConf()

	good := []string{
		"-rf.txt",
		"quote\"d 'name'.txt",
		"glob*?[a].txt",
		"back\\slash.txt",
		"tab\there.txt",
		"$(touch pwned).txt",
		"ünïcødé ✓.txt",
		"semi;colon&amp.txt",
		"#hash.txt",
		"new\nline.txt",
		"carriage\rreturn.txt",
		"Password: ",
	}
	// A remote shell would run $(touch pwned) in the login folder.
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	pwned := filepath.Join(home, "pwned")
	if exists(pwned) {
		t.Fatalf("%s exists before the test", pwned)
	}
	c := collect(t, n.url())
	startAgent(t, e.cfg)
	for _, name := range good {
		writeFile(t, filepath.Join(e.watch, name), []byte(name))
	}
	eventually(t, 30*time.Second, "every sendable name delivered", func() bool {
		for _, name := range good {
			if !sameContent(filepath.Join(e.remote, name), []byte(name)) {
				return false
			}
		}
		return true
	})
	if failed := c.ofType(events.TypeTransferFailed); len(failed) != 0 {
		t.Errorf("%d failed events; the first: %+v", len(failed), failed[0].transfer(t).Error)
	}
	if got := names(e.remote); len(got) != len(good) {
		t.Errorf("remote holds %q, want exactly the %d files", got, len(good))
	}
	if exists(pwned) || exists(filepath.Join(e.remote, "pwned")) {
		t.Error("a file name was run as a command")
	}
}
