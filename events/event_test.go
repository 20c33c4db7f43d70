package events

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Fixed values make the golden files stable; they read like a real run.
var (
	goldenSubjects = Subjects{Prefix: "dropship", Agent: "edge-01"}
	goldenTarget   = TargetRef{Name: "acme", Host: "sftp.acme.example", Port: 22}
	goldenStart    = time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.UTC)
	goldenLocal    = "/srv/drop/acme/invoices/2025-03/INV-10442.pdf"
	goldenRemote   = "/incoming/invoices/2025-03/INV-10442.pdf"
	goldenTID      = uuidV7At(goldenStart, 0).String()
)

func at(d time.Duration) *time.Time {
	t := goldenStart.Add(d)
	return &t
}

func exitCode(c int) *int { return &c }

func goldenTransfer(attempt int) Transfer {
	return Transfer{
		TransferID: goldenTID,
		Attempt:    attempt,
		Watch:      "/srv/drop/acme",
		Target:     goldenTarget,
		LocalPath:  goldenLocal,
		RemotePath: goldenRemote,
		SizeBytes:  48213760,
		SHA256:     "9f2c4e1a7b3d5f60812ab4c9d0e7f36a5b8c1d2e4f6a7b9c0d1e2f3a4b5c6d7e",
	}
}

// goldenEvents returns one realistic event of every type, keyed by its
// CloudEvents type.
func goldenEvents(t *testing.T) map[string]Event {
	t.Helper()
	s := goldenSubjects
	evs := map[string]Event{}
	add := func(ev Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		evs[ev.Type] = ev
	}

	queued := goldenTransfer(0)
	queued.SHA256 = "" // computed while sending
	queued.Reason = "settled: size and mtime unchanged for 2s"
	add(NewTransfer(s, TransferQueued, queued))

	started := goldenTransfer(1)
	started.StartedAt = at(time.Second)
	add(NewTransfer(s, TransferStarted, started))

	retrying := goldenTransfer(1)
	retrying.StartedAt = at(time.Second)
	retrying.FinishedAt = at(16*time.Second + 250*time.Millisecond)
	retrying.DurationSeconds = 15.25
	retrying.ExitCode = exitCode(255)
	retrying.Error = &ErrorInfo{Class: "connect-timeout", Message: "ssh: connect to host sftp.acme.example port 22: Connection timed out", Retryable: true}
	retrying.NextAttemptAt = at(21*time.Second + 250*time.Millisecond) // retry_backoff 5s
	add(NewTransfer(s, TransferRetrying, retrying))

	completed := goldenTransfer(2)
	completed.StartedAt = at(22 * time.Second)
	completed.FinishedAt = at(26*time.Second + 500*time.Millisecond)
	completed.DurationSeconds = 4.5
	completed.BytesPerSecond = 10714168.89
	completed.ExitCode = exitCode(0)
	add(NewTransfer(s, TransferCompleted, completed))

	failed := goldenTransfer(2)
	failed.StartedAt = at(22 * time.Second)
	failed.FinishedAt = at(23 * time.Second)
	failed.DurationSeconds = 1
	failed.ExitCode = exitCode(1)
	failed.Error = &ErrorInfo{Class: "auth", Message: "Permission denied (publickey,password).", Retryable: false}
	add(NewTransfer(s, TransferFailed, failed))

	// The completed transfer above, whose source could not be archived.
	postFailed := goldenTransfer(2)
	postFailed.Error = &ErrorInfo{Class: "archive", Message: "archive into /srv/drop/acme/.dropship-sent: rename /srv/drop/acme/invoices/2025-03/INV-10442.pdf: permission denied: the folder /srv/drop/acme/invoices/2025-03 (owner alice, group alice, mode drwxr-xr-x) is not writable by dropship: make the watch folder setgid and its sub-folders group-writable (see the README)", Retryable: true}
	postFailed.NextAttemptAt = at(31*time.Second + 500*time.Millisecond) // retry_backoff 5s
	add(NewTransfer(s, TransferPostFailed, postFailed))

	add(NewProgress(s, Progress{
		TransferID:     goldenTID,
		Attempt:        2,
		Target:         goldenTarget,
		LocalPath:      goldenLocal,
		RemotePath:     goldenRemote,
		Percent:        57,
		BytesSent:      27481850,
		SizeBytes:      48213760,
		BytesPerSecond: 11010048,
		ETASeconds:     2,
	}))

	add(NewLog(s, Log{
		TransferID: goldenTID,
		Attempt:    2,
		Target:     goldenTarget,
		Line:       "Warning: Permanently added 'sftp.acme.example' (ED25519) to the list of known hosts.",
		Seq:        1,
	}))

	agent := Agent{Version: "0.4.0", Hostname: "edge-01.example.net", PID: 4711}
	agent.Message = "watching 2 folders for 1 target"
	add(NewAgent(s, AgentStarted, agent))
	agent.Message = "configuration reloaded: 3 folders for 2 targets"
	add(NewAgent(s, AgentReloaded, agent))
	agent.Message = "stopping: signal terminated; 1 transfer in flight will resume on restart"
	add(NewAgent(s, AgentStopping, agent))
	agent.Message = "cannot watch a folder"
	agent.Error = "watch /srv/drop/globex: no such file or directory"
	add(NewAgent(s, AgentError, agent))

	// A relay: the customer's server is listed, a file fetched into the
	// spool, then deleted from the server once every target has it.
	customer := TargetRef{Name: "customer", Host: "sftp.customer.example", Port: 22}
	spooled := "/var/lib/dropship/spool/customer/orders/2025-03-14.csv"
	mtime := goldenStart.Add(-3 * time.Minute).Truncate(time.Second)
	add(NewFetch(s, FetchListed, FetchData{Source: customer, RemotePath: "/outgoing", Files: 1, Targets: []string{"acme", "backup"}}))
	fetched := FetchData{Source: customer, RemotePath: "/outgoing/orders/2025-03-14.csv", LocalPath: spooled, SizeBytes: 18304, ModTime: &mtime,
		SHA256: "4b1f0c9e2d7a8b6c5e3f1a0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b", Targets: []string{"acme", "backup"}}
	add(NewFetch(s, FetchFetched, fetched))
	add(NewFetch(s, FetchFailed, FetchData{Source: customer, RemotePath: "/outgoing",
		Error: &ErrorInfo{Class: "connect-refused", Message: "ssh: connect to host sftp.customer.example port 22: Connection refused", Retryable: true}}))
	add(NewFetch(s, FetchSourceDeleted, fetched))

	// Fixed ids and times, as in a real run: the agent starts, the file is
	// queued, the first attempt times out, the second completes (or, in the
	// failed example, is refused).
	times := map[string]time.Duration{
		TypeAgentStarted:       -5 * time.Second,
		TypeTransferQueued:     0,
		TypeTransferStarted:    time.Second,
		TypeTransferRetrying:   16*time.Second + 250*time.Millisecond,
		TypeLog:                22*time.Second + 310*time.Millisecond,
		TypeProgress:           24*time.Second + 500*time.Millisecond,
		TypeTransferCompleted:  26*time.Second + 500*time.Millisecond,
		TypeTransferFailed:     23 * time.Second,
		TypeAgentReloaded:      time.Hour,
		TypeAgentError:         time.Hour + time.Second,
		TypeAgentStopping:      2 * time.Hour,
		TypeTransferPostFailed: 26*time.Second + 500*time.Millisecond,
		TypeFetchListed:        -time.Second,
		TypeFetchFetched:       -500 * time.Millisecond,
		TypeFetchFailed:        3 * time.Hour,
		TypeFetchSourceDeleted: 27 * time.Second,
	}
	for i, typ := range allTypes {
		ev, ok := evs[typ]
		if !ok {
			t.Fatalf("no golden event of type %s", typ)
		}
		ev.Time = goldenStart.Add(times[typ])
		ev.ID = uuidV7At(ev.Time, byte(i+1)).String()
		evs[typ] = ev
	}
	return evs
}

// uuidV7At returns a UUIDv7 with the timestamp of t and fixed "random" bits.
func uuidV7At(t time.Time, n byte) uuid.UUID {
	var u uuid.UUID
	ms := uint64(t.UnixMilli())
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	copy(u[6:], []byte{0x7c, 0x41, 0x9a, 0x52, 0x3e, 0x0d, 0x81, 0x6f, 0x27, n})
	return u
}

var allTypes = []string{
	TypeTransferQueued, TypeTransferStarted, TypeTransferRetrying, TypeTransferCompleted, TypeTransferFailed,
	TypeProgress, TypeLog,
	TypeAgentStarted, TypeAgentReloaded, TypeAgentStopping, TypeAgentError,
	TypeTransferPostFailed,
	TypeFetchListed, TypeFetchFetched, TypeFetchFailed, TypeFetchSourceDeleted,
}

// TestGoldenEnvelopes pins the JSON of every event type, as subscribers and
// docs/events.md see it. Run with -update to rewrite testdata/.
func TestGoldenEnvelopes(t *testing.T) {
	for typ, ev := range goldenEvents(t) {
		t.Run(typ, func(t *testing.T) {
			wire, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, wire, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			path := filepath.Join("testdata", typ+".json")
			if *update {
				if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("%s differs from the golden file (run go test -update if the change is intended)\ngot:\n%s\nwant:\n%s", typ, pretty.Bytes(), want)
			}

			// Consumers parse the golden form back into the same event.
			back, err := Parse(want)
			if err != nil {
				t.Fatal(err)
			}
			back.NATSSubject = ev.NATSSubject
			if !back.Time.Equal(ev.Time) {
				t.Errorf("time %v, want %v", back.Time, ev.Time)
			}
			back.Time = ev.Time
			var compact bytes.Buffer
			if err := json.Compact(&compact, back.Data); err != nil {
				t.Fatal(err)
			}
			back.Data = compact.Bytes()
			if !reflect.DeepEqual(back, ev) {
				t.Errorf("parsed back:\n%+v\nwant:\n%+v", back, ev)
			}
		})
	}
}

func TestEnvelopeAttributes(t *testing.T) {
	for typ, ev := range goldenEvents(t) {
		var m map[string]any
		b, _ := json.Marshal(ev)
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"specversion", "id", "source", "type", "time", "datacontenttype", "data"} {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: attribute %q missing", typ, k)
			}
		}
		if m["specversion"] != "1.0" || m["source"] != "/dropship/edge-01" || m["datacontenttype"] != "application/json" {
			t.Errorf("%s: attributes %v", typ, m)
		}
		if _, ok := m["NATSSubject"]; ok {
			t.Errorf("%s: the NATS subject leaked into the JSON", typ)
		}
		data := m["data"].(map[string]any)
		if data["agent"] != "edge-01" {
			t.Errorf("%s: data.agent = %v, want the agent name filled in", typ, data["agent"])
		}
		state, isTransfer := ev.TransferState()
		if isTransfer {
			// Every field of the contract is present, null when unknown.
			for _, k := range []string{"transfer_id", "attempt", "agent", "watch", "target", "local_path", "remote_path",
				"size_bytes", "sha256", "started_at", "finished_at", "duration_seconds", "bytes_per_second", "exit_code"} {
				if _, ok := data[k]; !ok {
					t.Errorf("%s: data.%s missing", typ, k)
				}
			}
			_, hasErr := data["error"]
			if want := state == TransferFailed || state == TransferRetrying || state == TransferPostFailed; hasErr != want {
				t.Errorf("%s: data.error present = %v, want %v", typ, hasErr, want)
			}
			if m["subject"] != goldenLocal {
				t.Errorf("%s: subject = %v, want the local path", typ, m["subject"])
			}
		}
	}
}

func TestNewAssignsFreshSortableIDs(t *testing.T) {
	var prev string
	for range 100 {
		ev, err := NewAgent(goldenSubjects, AgentStarted, Agent{})
		if err != nil {
			t.Fatal(err)
		}
		u, err := uuid.Parse(ev.ID)
		if err != nil || u.Version() != 7 {
			t.Fatalf("id %q: not a UUIDv7 (%v)", ev.ID, err)
		}
		if ev.ID <= prev {
			t.Fatalf("id %s not after %s", ev.ID, prev)
		}
		prev = ev.ID
		if ev.Time.Location() != time.UTC || time.Since(ev.Time) > time.Minute {
			t.Fatalf("time %v: want now, in UTC", ev.Time)
		}
		if ev.NATSSubject != "dropship.edge-01.agent.started" {
			t.Fatalf("NATS subject %q", ev.NATSSubject)
		}
	}
}

func TestNewTransferChecksErrorInfo(t *testing.T) {
	withErr := goldenTransfer(1)
	withErr.Error = &ErrorInfo{Class: "connect-timeout", Message: "boom"}
	for _, tc := range []struct {
		state TransferState
		d     Transfer
		ok    bool
	}{
		{TransferFailed, goldenTransfer(1), false},
		{TransferRetrying, goldenTransfer(1), false},
		{TransferCompleted, withErr, false},
		{TransferFailed, withErr, true},
		{TransferCompleted, goldenTransfer(1), true},
		{"exploded", goldenTransfer(1), false},
		{TransferQueued, Transfer{}, false}, // no target
	} {
		_, err := NewTransfer(goldenSubjects, tc.state, tc.d)
		if (err == nil) != tc.ok {
			t.Errorf("NewTransfer(%s, error=%v, target=%q): err = %v, want ok = %v", tc.state, tc.d.Error != nil, tc.d.Target.Name, err, tc.ok)
		}
	}
}

func TestNewTransferStoresUTC(t *testing.T) {
	d := goldenTransfer(1)
	local := time.Date(2025, 3, 14, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	d.StartedAt = &local
	ev, err := NewTransfer(goldenSubjects, TransferStarted, d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ev.Data), `"started_at":"2025-03-14T09:00:00Z"`) {
		t.Errorf("data %s: want started_at in UTC", ev.Data)
	}
	if d.StartedAt.Location() == time.UTC {
		t.Error("NewTransfer changed the caller's time")
	}
}

func TestAccessorsCheckType(t *testing.T) {
	evs := goldenEvents(t)
	tr, err := evs[TypeTransferCompleted].Transfer()
	if err != nil || tr.TransferID != goldenTID || *tr.ExitCode != 0 || tr.Target != goldenTarget {
		t.Errorf("Transfer() = %+v, %v", tr, err)
	}
	if _, err := evs[TypeProgress].Transfer(); err == nil {
		t.Error("Transfer() of a progress event: no error")
	}
	p, err := evs[TypeProgress].Progress()
	if err != nil || p.Percent != 57 {
		t.Errorf("Progress() = %+v, %v", p, err)
	}
	l, err := evs[TypeLog].Log()
	if err != nil || l.Seq != 1 || !strings.HasPrefix(l.Line, "Warning:") {
		t.Errorf("Log() = %+v, %v", l, err)
	}
	a, err := evs[TypeAgentError].Agent()
	if err != nil || a.Error == "" || a.PID != 4711 {
		t.Errorf("Agent() = %+v, %v", a, err)
	}
	if _, err := evs[TypeAgentError].Log(); err == nil {
		t.Error("Log() of an agent event: no error")
	}
	if st, ok := evs[TypeAgentStopping].AgentState(); !ok || st != AgentStopping {
		t.Errorf("AgentState() = %q, %v", st, ok)
	}
	for typ, ev := range evs {
		if want := typ != TypeProgress && typ != TypeLog; ev.Durable() != want {
			t.Errorf("%s: Durable() = %v, want %v", typ, ev.Durable(), want)
		}
	}
	if _, ok := evs[TypeProgress].TransferState(); ok {
		t.Error("TransferState() of a progress event: ok")
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		``,
		`[]`,
		`{"specversion":"0.3","id":"x","source":"/s","type":"t"}`,
		`{"specversion":"1.0","source":"/s","type":"t"}`,
		`{"specversion":"1.0","id":"x","type":"t"}`,
		`{"specversion":"1.0","id":"x","source":"/s"}`,
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%s): no error", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, typ := range allTypes {
		if b, err := os.ReadFile(filepath.Join("testdata", typ+".json")); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parses can be read as its kind without panicking.
		_, _ = ev.Transfer()
		_, _ = ev.Progress()
		_, _ = ev.Log()
		_, _ = ev.Agent()
	})
}
