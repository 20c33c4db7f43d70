package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/testpki"
)

// docPermissions is the nats-server configuration of docs/nats-permissions.md
// for an agent named name (the doc's example is edge-01) with password pw,
// less the lines that contain any of drop.
func docPermissions(t testing.TB, name, pw string, drop ...string) string {
	return docBlock(t, 0, name, pw, drop...)
}

// docBlock is the nats-server configuration block i of
// docs/nats-permissions.md, made as docPermissions makes the first.
func docBlock(t testing.TB, i int, name, pw string, drop ...string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "nats-permissions.md"))
	if err != nil {
		t.Fatal(err)
	}
	all := regexp.MustCompile("(?s)```conf\n(.*?)```").FindAllSubmatch(doc, -1)
	if len(all) <= i {
		t.Fatalf("docs/nats-permissions.md has %d ```conf blocks, not %d", len(all), i+1)
	}
	m := all[i]
	var out []string
	for line := range strings.Lines(string(m[1])) {
		keep := true
		for _, d := range drop {
			if strings.Contains(line, d) {
				keep = false
			}
		}
		if keep {
			out = append(out, line)
		}
	}
	conf := strings.Join(out, "")
	conf = strings.ReplaceAll(conf, "edge-01", name)
	return strings.ReplaceAll(conf, `"PASSWORD"`, fmt.Sprintf("%q", pw))
}

// permissionsServer runs a nats-server with JetStream whose only users are
// those of conf (a nats-server configuration) and an admin with every
// permission (admin:admin), for the test's own look at the server.
func permissionsServer(t testing.TB, confs ...string) (agentURL, adminURL string) {
	t.Helper()
	var opts *server.Options
	for _, conf := range confs {
		file := filepath.Join(t.TempDir(), "nats-server.conf")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		o, err := server.ProcessConfigFile(file)
		if err != nil {
			t.Fatalf("the permissions of docs/nats-permissions.md do not load as a nats-server configuration: %v", err)
		}
		if len(o.Users) != 1 || o.Users[0].Permissions == nil {
			t.Fatalf("the configuration has %d users, want one with permissions", len(o.Users))
		}
		if opts == nil {
			opts = o
		} else {
			opts.Users = append(opts.Users, o.Users...)
		}
	}
	opts.Users = append(opts.Users, &server.User{Username: "admin", Password: "admin"})
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.NoLog, opts.NoSigs = true, true
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	srv := natstest.RunServer(opts)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	port := srv.Addr().(*net.TCPAddr).Port
	return fmt.Sprintf("nats://127.0.0.1:%d", port), fmt.Sprintf("nats://admin:admin@127.0.0.1:%d", port)
}

// TestAgentWithExactPermissions runs an agent whose NATS user has exactly
// the permissions docs/nats-permissions.md lists, read from it: it starts,
// creates its stream, publishes and stores its events, answers `dropship
// status` and passes `check -connect`, with no permission refused. Asking
// for another agent, which that user may not, is reported as a permission
// problem, not as an agent that does not run.
func TestAgentWithExactPermissions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	url, admin := permissionsServer(t, docPermissions(t, agentName, "agent-pw"))
	e.conf.get("[nats]").
		set("url", strings.TrimPrefix(url, "nats://")). // without a scheme, as nats.go takes it
		set("auto_create_stream", true).
		set("user", "dropship-"+agentName).
		set("password_file", e.secretFile("nats.password", "agent-pw\n"))
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, admin)
	a := startAgent(t, e.cfg)
	writeFile(t, filepath.Join(e.watch, "permitted.txt"), []byte("exactly these permissions\n"))
	eventually(t, 30*time.Second, "the completed event", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) == 1
	})
	eventually(t, 10*time.Second, "the events in the stream", func() bool {
		return len(filterType(storedEvents(t, admin), events.TypeTransferCompleted)) == 1
	})
	if st := status(t, "-c", e.cfg); st.Agent != agentName || !st.NATSConnected {
		t.Errorf("status: %+v", st)
	}
	if r := dropship(t, "check", "-connect", "-c", e.cfg); !strings.Contains(r.stdout, "nats: ok") {
		t.Errorf("check -connect with the documented permissions:\n%s", r)
	}

	r := dropship(t, "status", "-c", e.cfg, "-agent", "other")
	if r.code == 0 || !strings.Contains(r.stderr, "permissions violation") || !strings.Contains(r.stderr, "publish to dropship.other.ctl.status") || strings.Contains(r.stderr, "is it running") {
		t.Errorf("status of an agent the user may not ask: want a permission problem naming the subject:\n%s", r)
	}
	r = dropship(t, "status", "-c", e.cfg, "-all")
	if r.code == 0 || !strings.Contains(r.stderr, "may not publish to $SRV.INFO.dropship") {
		t.Errorf("status -all with a user that may not find the agents: want a permission problem naming the subject:\n%s", r)
	}
	// The agent's user may not read every agent's events: `dropship events`
	// says so rather than wait for events that never come.
	r = dropship(t, "events", "-c", e.cfg, "-json")
	if r.code == 0 || !strings.Contains(r.stderr, "may not subscribe to "+prefix+".") || !strings.Contains(r.stderr, "permission problem") {
		t.Errorf("events with a user that may not subscribe to them: want a permission problem naming the subject:\n%s", r)
	}
	a.stop(10 * time.Second)
	for _, bad := range []string{"permissions violation", "level=ERROR", "agent-pw"} {
		if strings.Contains(a.logs(), bad) {
			t.Errorf("the agent's log has %q:\n%s", bad, a.logs())
		}
	}
}

// TestAgentOfAnOperatorsStream: an agent of a stream the operator manages
// (auto_create_stream = false) needs neither $JS.API.STREAM.CREATE nor
// UPDATE, as docs/nats-permissions.md says: without them it starts, stores
// its events and refuses no permission.
func TestAgentOfAnOperatorsStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	url, admin := permissionsServer(t, docPermissions(t, agentName, "agent-pw", "$JS.API.STREAM.CREATE.", "$JS.API.STREAM.UPDATE."))
	createStream(t, admin)
	e.conf.get("[nats]").
		set("url", url).
		set("user", "dropship-"+agentName).
		set("password_file", e.secretFile("nats.password", "agent-pw"))
	e.writeConf()
	a := startAgent(t, e.cfg)
	eventually(t, 10*time.Second, "the started event stored", func() bool {
		return len(filterType(storedEvents(t, admin), events.TypeAgentStarted)) == 1
	})
	if st := status(t, "-c", e.cfg); !st.NATSConnected {
		t.Errorf("status: %+v", st)
	}
	a.stop(10 * time.Second)
	for _, bad := range []string{"permissions violation", "level=ERROR"} {
		if strings.Contains(a.logs(), bad) {
			t.Errorf("the agent's log has %q:\n%s", bad, a.logs())
		}
	}
}

// TestAgentMissingAPermission: an agent whose user lacks one permission of
// the list logs an ERROR naming the subject and calling it a permission
// problem, and starts without waiting for the answer the server never
// sends.
func TestAgentMissingAPermission(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	url, _ := permissionsServer(t, docPermissions(t, agentName, "agent-pw", "$JS.API.STREAM.INFO."))
	e.conf.get("[nats]").
		set("url", url).
		set("auto_create_stream", true).
		set("user", "dropship-"+agentName).
		set("password_file", e.secretFile("nats.password", "agent-pw"))
	e.writeConf()
	a := startProc(t, "run", "-c", e.cfg)
	a.waitLog(30*time.Second, "may not publish to $JS.API.STREAM.INFO."+stream)
	// The check of the stream ends with the refusal, not 10 s later.
	a.waitLog(5*time.Second, "agent started")
	a.stop(10 * time.Second)
	var line string
	for l := range strings.Lines(a.logs()) {
		if strings.Contains(l, "may not publish to $JS.API.STREAM.INFO."+stream) {
			line = l
			break
		}
	}
	if !strings.Contains(line, "ERROR") || !strings.Contains(line, "permission problem") {
		t.Errorf("the permission refused is not an ERROR saying it is a permission problem: %s", line)
	}
}

// TestOperatorWithExactPermissions runs the operator's commands as a user
// with exactly the operator's permissions of docs/nats-permissions.md, read
// from it, against an agent with the agent's: status (of one agent and of
// all), retry -failed and events -since work, and no permission is refused.
func TestOperatorWithExactPermissions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	url, admin := permissionsServer(t, docPermissions(t, agentName, "agent-pw"), docBlock(t, 1, agentName, "ops-pw"))
	e.conf.get("[nats]").
		set("url", url).
		set("auto_create_stream", true).
		set("user", "dropship-"+agentName).
		set("password_file", e.secretFile("nats.password", "agent-pw"))
	e.writeConf()
	ops := filepath.Join(e.dir, "ops.toml")
	opsConf := fmt.Sprintf("[agent]\nname = %q\nstate_dir = %q\n\n[nats]\nurl = %q\nuser = \"dropship-ops\"\npassword_file = %q\n",
		agentName, filepath.Join(e.dir, "ops-state"), url, e.secretFile("ops.password", "ops-pw"))
	if err := os.WriteFile(ops, []byte(opsConf), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, e.cfg)
	var started string
	eventually(t, 10*time.Second, "the started event stored", func() bool {
		got := filterType(storedEvents(t, admin), events.TypeAgentStarted)
		if len(got) == 1 {
			started = got[0].ev.ID
		}
		return started != ""
	})

	if st := status(t, "-c", ops); st.Agent != agentName {
		t.Errorf("status as the operator: %+v", st)
	}
	if r := dropship(t, "status", "-c", ops, "-all"); r.code != 0 || !strings.Contains(r.stdout, agentName) {
		t.Errorf("status -all as the operator:\n%s", r)
	}
	if r := dropship(t, "retry", "-c", ops, "-failed"); r.code != 0 {
		t.Errorf("retry -failed as the operator:\n%s", r)
	}
	evp := startProc(t, "events", "-c", ops, "-json", "-since", "1h")
	evp.waitLog(15*time.Second, started) // replayed from the stream
	evp.stop(5 * time.Second)
	a.stop(10 * time.Second)
	for _, p := range []*proc{a, evp} {
		if strings.Contains(p.logs(), "permissions violation") {
			t.Errorf("a permission was refused:\n%s", p.logs())
		}
	}
}

// TestCheckNATSLogin: `dropship check` reports what is wrong with the
// login and TLS of [nats], every problem at once with its line, and never
// the secret.
func TestCheckNATSLogin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := filepath.Join(dir, "token")
	if err := os.WriteFile(open, []byte("t0ken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	lines := []string{
		`[agent]`,                             // 1
		`state_dir = "` + dir + `/state"`,     // 2
		`[nats]`,                              // 3
		`url = "127.0.0.1:4222"`,              // 4
		`user = "agent"`,                      // 5: and a token
		`password_file = "credential:pw"`,     // 6
		`token_file = "` + open + `"`,         // 7: two logins; readable by others
		`tls_cert_file = "` + dir + `/c.pem"`, // 8: no key
	}
	cfg := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfg, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := dropship(t, "check", "-c", cfg)
	if r.code != 2 {
		t.Fatalf("check of a bad [nats] login: %s", r)
	}
	for _, want := range []string{
		":7: nats.token_file: NATS takes one way of logging in",
		":7: nats.token_file: secret file " + open + " is open to group or others",
		":8: nats.tls_cert_file: needs its private key",
	} {
		if !strings.Contains(r.stdout+r.stderr, want) {
			t.Errorf("check does not say %q:\n%s", want, r)
		}
	}
	if strings.Contains(r.stdout+r.stderr, "t0ken") {
		t.Errorf("check shows the token:\n%s", r)
	}
}

// TestAgentOverTLS: an agent with a CA, a client certificate and its key in
// [nats] connects to a server that verifies clients, stores its events and
// answers status; check -connect logs in the same way.
func TestAgentOverTLS(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CaFile: pki.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	opts := natstest.DefaultTestOptions
	opts.Port, opts.JetStream, opts.StoreDir = -1, true, t.TempDir()
	opts.TLSConfig, opts.TLS, opts.TLSVerify = tc, true, true
	srv := natstest.RunServer(&opts)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := fmt.Sprintf("tls://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)

	e := newEnv(t)
	key := e.secretFile("client-key.pem", mustReadFile(t, pki.ClientKey))
	e.conf.get("[nats]").
		set("url", url).
		set("auto_create_stream", true).
		set("tls_ca_file", pki.CA).
		set("tls_cert_file", pki.ClientCert).
		set("tls_key_file", key).
		set("tls_server_name", testpki.ServerName)
	e.writeConf()
	if r := dropship(t, "check", "-connect", "-c", e.cfg); !strings.Contains(r.stdout, "nats: ok") {
		t.Errorf("check -connect over TLS with a client certificate:\n%s", r)
	}
	a := startAgent(t, e.cfg)
	if st := status(t, "-c", e.cfg); !st.NATSConnected || !st.Stream.Stored {
		t.Errorf("status over TLS: %+v", st)
	}
	a.stop(10 * time.Second)
}

func mustReadFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
