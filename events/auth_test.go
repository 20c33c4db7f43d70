package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/dropship/dropship/internal/testpki"
)

// logRecord is one line a recorder got.
type logRecord struct {
	level slog.Level
	msg   string
	attrs string
}

// recorder is a slog handler that keeps what it is given, for tests.
type recorder struct {
	mu      *sync.Mutex
	records *[]logRecord
	attrs   string
}

func newRecorder() *recorder { return &recorder{mu: &sync.Mutex{}, records: &[]logRecord{}} }

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(r.attrs)
	rec.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	r.mu.Lock()
	*r.records = append(*r.records, logRecord{rec.Level, rec.Message, b.String()})
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *r
	for _, a := range as {
		c.attrs += fmt.Sprintf(" %s=%v", a.Key, a.Value)
	}
	return &c
}
func (r *recorder) WithGroup(string) slog.Handler { return r }

// lines returns the records at level or above whose message contains s.
func (r *recorder) lines(level slog.Level, s string) []logRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logRecord
	for _, rec := range *r.records {
		if rec.level >= level && strings.Contains(rec.msg, s) {
			out = append(out, rec)
		}
	}
	return out
}

func (r *recorder) dump(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range *r.records {
		t.Logf("%s %s%s", rec.level, rec.msg, rec.attrs)
	}
}

// authServer runs a nats-server with JetStream and the options set by
// configure on a free port.
func authServer(t *testing.T, configure func(*server.Options)) *server.Server {
	t.Helper()
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	configure(&opts)
	srv := natstest.RunServer(&opts)
	t.Cleanup(func() { stopServer(srv) })
	return srv
}

func writeSecret(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// storesEvent checks that b, once connected, stores an event in a stream
// it creates: the whole path an agent uses, JetStream API included.
func storesEvent(t *testing.T, b *Bus) {
	t.Helper()
	waitConnected(t, b)
	ctx := t.Context()
	if err := b.EnsureStream(ctx, testStream, AllLifecycle("dropship")); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishDurable(ctx, completedEvent(t, goldenSubjects, "acme")); err != nil {
		t.Fatal(err)
	}
}

// refused checks that b does not get connected, and that the log says why
// at ERROR, once.
func refused(t *testing.T, b *Bus, rec *recorder, why string) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			rec.dump(t)
		}
	})
	waitFor(t, "the refusal in the log", func() bool { return len(rec.lines(slog.LevelError, "")) > 0 })
	if b.Connected() {
		t.Fatal("connected, though the server should refuse")
	}
	errs := rec.lines(slog.LevelError, "")
	if len(errs) != 1 || !strings.Contains(strings.ToLower(errs[0].attrs), why) {
		rec.dump(t)
		t.Fatalf("ERROR lines %v, want one saying %q", errs, why)
	}
}

func TestConnectUserPassword(t *testing.T) {
	srv := authServer(t, func(o *server.Options) { o.Username, o.Password = "agent", "s3cret-pw" })
	if _, err := nats.Connect(srv.ClientURL()); err == nil {
		t.Fatal("the server accepts anonymous clients; the test proves nothing")
	}
	storesEvent(t, connect(t, ConnectOptions{URL: srv.ClientURL(), Auth: Auth{User: "agent", Password: "s3cret-pw"}}))

	rec := newRecorder()
	b := connect(t, ConnectOptions{URL: srv.ClientURL(), Auth: Auth{User: "agent", Password: "wrong-pw"}, Logger: slog.New(rec)})
	refused(t, b, rec, "authorization")
	for _, r := range *rec.records {
		if strings.Contains(r.msg+r.attrs, "wrong-pw") {
			t.Errorf("the password is in the log: %s%s", r.msg, r.attrs)
		}
	}
}

func TestConnectToken(t *testing.T) {
	srv := authServer(t, func(o *server.Options) { o.Authorization = "t0ken-value" })
	storesEvent(t, connect(t, ConnectOptions{URL: srv.ClientURL(), Auth: Auth{Token: "t0ken-value"}}))
	rec := newRecorder()
	refused(t, connect(t, ConnectOptions{URL: srv.ClientURL(), Auth: Auth{Token: "other"}, Logger: slog.New(rec)}), rec, "authorization")
}

func TestConnectNKeySeed(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	srv := authServer(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
	file := writeSecret(t, "agent.nk", string(seed)+"\n")
	storesEvent(t, connect(t, ConnectOptions{URL: srv.ClientURL(), Auth: Auth{NKeySeedFile: file}}))

	other, _ := nkeys.CreateUser()
	oseed, _ := other.Seed()
	rec := newRecorder()
	b := connect(t, ConnectOptions{URL: srv.ClientURL(), Auth: Auth{NKeySeedFile: writeSecret(t, "other.nk", string(oseed))}, Logger: slog.New(rec)})
	refused(t, b, rec, "authorization")
}

func TestConnectTLS(t *testing.T) {
	pki := testpki.New(t)
	tlsServer := func(cert, key string, verify bool) *server.Server {
		return authServer(t, func(o *server.Options) {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cert, KeyFile: key, CaFile: pki.CA, Verify: verify})
			if err != nil {
				t.Fatal(err)
			}
			o.TLSConfig, o.TLS, o.TLSVerify = tc, true, verify
		})
	}
	t.Run("client certificate", func(t *testing.T) {
		srv := tlsServer(pki.ServerCert, pki.ServerKey, true)
		url := fmt.Sprintf("tls://127.0.0.1:%d", serverPort(t, srv))
		storesEvent(t, connect(t, ConnectOptions{URL: url, Auth: Auth{TLS: TLSFiles{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}}}))

		rec := newRecorder()
		refused(t, connect(t, ConnectOptions{URL: url, Auth: Auth{TLS: TLSFiles{CAFile: pki.CA}}, Logger: slog.New(rec)}), rec, "tls")
	})
	t.Run("unknown CA", func(t *testing.T) {
		srv := tlsServer(pki.ServerCert, pki.ServerKey, false)
		url := fmt.Sprintf("nats://127.0.0.1:%d", serverPort(t, srv))
		storesEvent(t, connect(t, ConnectOptions{URL: url, Auth: Auth{TLS: TLSFiles{CAFile: pki.CA}}}))
		rec := newRecorder()
		refused(t, connect(t, ConnectOptions{URL: url, Auth: Auth{TLS: TLSFiles{CAFile: pki.OtherCA}}, Logger: slog.New(rec)}), rec, "x509")
	})
	t.Run("server name", func(t *testing.T) {
		srv := tlsServer(pki.OnlyNameCert, pki.OnlyNameKey, false)
		url := fmt.Sprintf("tls://127.0.0.1:%d", serverPort(t, srv))
		storesEvent(t, connect(t, ConnectOptions{URL: url, Auth: Auth{TLS: TLSFiles{CAFile: pki.CA, ServerName: testpki.ServerName}}}))
		rec := newRecorder()
		refused(t, connect(t, ConnectOptions{URL: url, Auth: Auth{TLS: TLSFiles{CAFile: pki.CA}}, Logger: slog.New(rec)}), rec, "x509")
	})
}

func TestAuthCheck(t *testing.T) {
	pki := testpki.New(t)
	kp, _ := nkeys.CreateAccount()
	aseed, _ := kp.Seed()
	for _, tc := range []struct {
		name string
		auth Auth
		want string // "" for none
	}{
		{"anonymous", Auth{}, ""},
		{"user and password", Auth{User: "u", Password: "p"}, ""},
		{"user without password", Auth{User: "u"}, "a user needs a password"},
		{"token and user", Auth{User: "u", Password: "p", Token: "t"}, "not a user and password and a token"},
		{"creds and nkey", Auth{CredentialsFile: "/x.creds", NKeySeedFile: "/x.nk"}, "not a .creds file and an nkey seed"},
		{"missing seed", Auth{NKeySeedFile: filepath.Join(t.TempDir(), "missing.nk")}, "no such file"},
		{"garbage seed", Auth{NKeySeedFile: writeSecret(t, "bad.nk", "SUnot-a-seed")}, "holds no nkey seed"},
		{"account seed", Auth{NKeySeedFile: writeSecret(t, "acct.nk", string(aseed))}, "not a user's"},
		{"half a certificate", Auth{TLS: TLSFiles{CertFile: pki.ClientCert}}, "both its certificate file and its key file"},
		{"mismatched pair", Auth{TLS: TLSFiles{CertFile: pki.ClientCert, KeyFile: pki.ServerKey}}, "private key does not match"},
		{"CA not PEM", Auth{TLS: TLSFiles{CAFile: pki.ClientKey}}, "holds no PEM certificate"},
		{"good TLS", Auth{TLS: TLSFiles{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey, ServerName: "x"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.auth.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Check: %v, want an error saying %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), string(aseed)) {
				t.Fatal("the error holds the seed")
			}
			if tc.want != "" {
				if _, err := Connect(t.Context(), ConnectOptions{URL: "nats://127.0.0.1:1", Auth: tc.auth}); err == nil {
					t.Fatal("Connect accepted what Check refuses")
				}
			}
		})
	}
}

// TestOutageLogsLittle: an outage is one WARN when it starts, one when it
// ends (how long, how many events waited), a summary while it lasts, and
// no WARN per reconnect attempt.
func TestOutageLogsLittle(t *testing.T) {
	store := t.TempDir()
	srv := runServer(t, -1, store)
	port := serverPort(t, srv)
	rec := newRecorder()
	b := connect(t, ConnectOptions{
		URL:          fmt.Sprintf("127.0.0.1:%d", port), // no scheme, as nats.go takes it
		Logger:       slog.New(rec),
		Waiting:      func() int { return 7 },
		OutageReport: 1500 * time.Millisecond,
	})
	waitConnected(t, b)
	stopServer(srv)
	waitFor(t, "the outage's first line", func() bool { return len(rec.lines(slog.LevelWarn, "lost the connection")) == 1 })
	deadline := time.Now().Add(20 * time.Second)
	for len(rec.lines(slog.LevelWarn, "NATS still unreachable for")) < 2 {
		if time.Now().After(deadline) {
			rec.dump(t)
			t.Fatal("no two summaries of the outage")
		}
		time.Sleep(50 * time.Millisecond)
	}
	sum := rec.lines(slog.LevelWarn, "NATS still unreachable for")[0]
	if !strings.Contains(sum.msg, "7 events waiting") {
		t.Errorf("summary %q does not say how many events wait", sum.msg)
	}
	runServer(t, port, store)
	waitConnected(t, b)
	waitFor(t, "the outage's last line", func() bool { return len(rec.lines(slog.LevelWarn, "NATS is back after")) == 1 })
	back := rec.lines(slog.LevelWarn, "NATS is back after")[0]
	if !strings.Contains(back.msg, "7 events waited") {
		t.Errorf("%q does not say how many events waited", back.msg)
	}
	if n := len(rec.lines(slog.LevelDebug, "reconnect attempt failed")); n < 2 {
		t.Errorf("%d failed attempts logged at Debug; the test did not see an outage", n)
	}
	warns := rec.lines(slog.LevelWarn, "")
	if len(warns) != 2+len(rec.lines(slog.LevelWarn, "NATS still unreachable")) {
		rec.dump(t)
		t.Errorf("%d WARN lines; want the outage's first, its summaries and its last only", len(warns))
	}
	if len(rec.lines(slog.LevelError, "")) > 0 {
		rec.dump(t)
		t.Error("an outage of a server that is just down logged an ERROR")
	}
}

// TestPermissionViolationIsNamed: what the server refuses the user is an
// ERROR naming the subject and calling it a permission problem, once.
func TestPermissionViolationIsNamed(t *testing.T) {
	srv := authServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "agent", Password: "pw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"allowed.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}}}
	})
	rec := newRecorder()
	b := connect(t, ConnectOptions{URL: srv.ClientURL(), Auth: Auth{User: "agent", Password: "pw"}, Logger: slog.New(rec)})
	waitConnected(t, b)
	ev := completedEvent(t, goldenSubjects, "acme")
	for range 3 {
		if err := b.PublishBestEffort(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the permission error", func() bool { return b.PermissionDenied() != nil })
	waitFor(t, "the ERROR line", func() bool { return len(rec.lines(slog.LevelError, "")) > 0 })
	errs := rec.lines(slog.LevelError, "")
	if len(errs) != 1 || !strings.Contains(errs[0].msg, "may not publish to "+ev.NATSSubject) || !strings.Contains(errs[0].msg, "permission problem") {
		rec.dump(t)
		t.Fatalf("ERROR lines %v, want one naming publish to %s as a permission problem", errs, ev.NATSSubject)
	}
	pd := b.PermissionDenied()
	if pd.Op != "publish" || pd.Subject != ev.NATSSubject || !errors.Is(pd, nats.ErrPermissionViolation) {
		t.Errorf("PermissionDenied() = %+v", pd)
	}
}

// TestCheckStreamWithoutPermission: a JetStream request the user may not
// make ends the check at once, with the violation as its problem, instead
// of waiting out the deadline for an answer that never comes.
func TestCheckStreamWithoutPermission(t *testing.T) {
	srv := authServer(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "agent", Password: "pw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"dropship.>", "$JS.API.INFO"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}}}
	})
	rec := newRecorder()
	b := connect(t, ConnectOptions{URL: srv.ClientURL(), Auth: Auth{User: "agent", Password: "pw"}, Logger: slog.New(rec)})
	waitConnected(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := b.CheckStream(ctx, StreamSetup{Name: testStream, Subjects: AllLifecycle("dropship"), Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the check took %s: it waited for an answer the server never sends", d)
	}
	if !strings.Contains(c.Problem, "may not publish to $JS.API.STREAM.INFO."+testStream) || !strings.Contains(c.Problem, "permission problem") || !strings.Contains(c.Fix, "docs/nats-permissions.md") {
		t.Errorf("Problem %q, Fix %q: want the permission named", c.Problem, c.Fix)
	}
}

// TestOutageFromStart: a server not there at start is the outage's first
// WARN; its coming up is the last, with how long it took.
func TestOutageFromStart(t *testing.T) {
	port := freePort(t)
	rec := newRecorder()
	b := connect(t, ConnectOptions{URL: fmt.Sprintf("127.0.0.1:%d", port), Logger: slog.New(rec), Waiting: func() int { return 3 }})
	if b.Connected() {
		t.Fatal("connected with no server")
	}
	if len(rec.lines(slog.LevelWarn, "not connected to NATS yet")) != 1 {
		rec.dump(t)
		t.Fatal("no WARN that NATS is not there at start")
	}
	runServer(t, port, t.TempDir())
	waitConnected(t, b)
	waitFor(t, "the WARN that NATS is there", func() bool { return len(rec.lines(slog.LevelWarn, "NATS is back after")) == 1 })
	if back := rec.lines(slog.LevelWarn, "NATS is back after")[0]; !strings.Contains(back.msg, "3 events waited") {
		t.Errorf("%q does not say how many events waited", back.msg)
	}
	if n := len(rec.lines(slog.LevelWarn, "")); n != 2 {
		rec.dump(t)
		t.Errorf("%d WARN lines, want 2", n)
	}
}

func TestRedactURLsWithoutScheme(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:4222":               "nats://127.0.0.1:4222",
		"agent:s3cret@127.0.0.1:4222":  "nats://agent:xxxxx@127.0.0.1:4222",
		"t0ken@n1:4222, tls://n2:4222": "nats://xxxxx@n1:4222,tls://n2:4222",
	} {
		if got := redactURLs(in); got != want {
			t.Errorf("redactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
