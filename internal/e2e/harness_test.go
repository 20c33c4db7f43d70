package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/ssh"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
)

// binary is the dropship binary under test, built by TestMain.
var binary string

// binaryEnv names an environment variable that, when set, is the path of a
// dropship binary to test (a packaged build, say) instead of building one.
const binaryEnv = "DROPSHIP_E2E_BINARY"

const (
	agentName = "e2e"
	prefix    = "dropship"
	stream    = "DROPSHIP_EVENTS"
	settle    = "300ms"
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if b := os.Getenv(binaryEnv); b != "" {
		binary = b
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "dropship-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "dropship")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the go tool is needed to build dropship:", err)
		return 1
	}
	args := []string{"build", "-o", binary}
	if raceBuild {
		args = append(args, "-race")
	}
	args = append(args, "github.com/dropship/dropship/cmd/dropship")
	cmd := exec.Command(goTool, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build dropship:", err)
		return 1
	}
	return m.Run()
}

// eventually polls cond every 50ms until it holds, and fails the test with
// what it was waiting for when timeout passes first.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// never checks that cond stays false for d.
func never(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatalf("%s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a writing process and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a dropship process started by a test: `run`, or `events`.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	out  syncBuffer // stdout and stderr
	done chan struct{}
	err  error // Wait's, once done is closed
}

// startProc starts the binary with args. The test's cleanup kills it if it
// is still running, prints its output when the test failed, and fails the
// test when the race detector reported something.
func startProc(t testing.TB, args ...string) *proc {
	t.Helper()
	p := newProc(t, binary, "dropship "+strings.Join(args, " "), args...)
	p.start()
	return p
}

// newProc prepares bin with args, its output collected, for start.
func newProc(t testing.TB, bin, name string, args ...string) *proc {
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	return p
}

// start starts a prepared proc, with the cleanup startProc promises.
func (p *proc) start() {
	t := p.t
	t.Helper()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if strings.Contains(p.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in %s", p.name)
		}
		if t.Failed() {
			out := p.out.String()
			if dir := os.Getenv("DROPSHIP_E2E_LOGDIR"); dir != "" {
				// The whole output, for runs too long to print.
				f := filepath.Join(dir, fmt.Sprintf("%s-%d.log", strings.ReplaceAll(t.Name(), "/", "_"), p.cmd.Process.Pid))
				if err := os.WriteFile(f, []byte(out), 0o644); err == nil {
					t.Logf("output of %s saved in %s", p.name, f)
				}
			}
			if len(out) > 200<<10 {
				out = "…" + out[len(out)-200<<10:]
			}
			t.Logf("output of %s (pid %d):\n%s", p.name, p.cmd.Process.Pid, out)
		}
	})
}

// startAgent runs `dropship run -c cfg` and waits until it says it started.
func startAgent(t testing.TB, cfg string) *proc {
	t.Helper()
	p := startProc(t, "run", "-c", cfg)
	p.waitLog(30*time.Second, "agent started")
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logs is everything the process printed so far.
func (p *proc) logs() string { return p.out.String() }

// waitLog waits until the process printed s; it fails at once if the process
// exited first.
func (p *proc) waitLog(timeout time.Duration, s string) {
	p.t.Helper()
	eventually(p.t, timeout, fmt.Sprintf("%q in the output of %s", s, p.name), func() bool {
		if strings.Contains(p.logs(), s) {
			return true
		}
		if p.exited() {
			p.t.Fatalf("%s exited (%v) before printing %q", p.name, p.err, s)
		}
		return false
	})
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v", p.name, err)
	}
}

// wait waits at most timeout for the process to exit and returns its exit
// status.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	default:
		p.t.Fatalf("%s: %v", p.name, p.err)
		return -1
	}
}

// stop sends SIGTERM and expects exit status 0 within timeout.
func (p *proc) stop(timeout time.Duration) {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(timeout); code != 0 {
		p.t.Fatalf("%s exited with status %d after SIGTERM, want 0", p.name, code)
	}
}

// kill9 kills the process with SIGKILL, as a crash or the OOM killer would.
func (p *proc) kill9() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	<-p.done
}

// result is the outcome of a command that ran to its end.
type result struct {
	code           int
	stdout, stderr string
}

// dropship runs the binary with args to its end (at most a minute).
func dropship(t testing.TB, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		t.Fatalf("dropship %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, r.stdout, r.stderr)
	}
	if strings.Contains(r.stderr, "WARNING: DATA RACE") {
		t.Errorf("the race detector reported a data race in dropship %s:\n%s", strings.Join(args, " "), r.stderr)
	}
	return r
}

func (r result) String() string {
	return fmt.Sprintf("exit status %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// conf is a dropship configuration file under construction.
type conf struct {
	tables []*table
}

// table is one TOML table: [name] or [[name]].
type table struct {
	header string
	keys   []string
	vals   map[string]string
}

func (c *conf) add(header string) *table {
	tb := &table{header: header, vals: map[string]string{}}
	c.tables = append(c.tables, tb)
	return tb
}

// get returns the first table with header (such as "[agent]").
func (c *conf) get(header string) *table {
	for _, tb := range c.tables {
		if tb.header == header {
			return tb
		}
	}
	return c.add(header)
}

// set sets key to v (a string, bool, int or []string), replacing an earlier
// value.
func (tb *table) set(key string, v any) *table {
	var s string
	switch v := v.(type) {
	case string:
		s = strconv.Quote(v)
	case bool:
		s = strconv.FormatBool(v)
	case int:
		s = strconv.Itoa(v)
	case []string:
		q := make([]string, len(v))
		for i, e := range v {
			q[i] = strconv.Quote(e)
		}
		s = "[" + strings.Join(q, ", ") + "]"
	default:
		panic(fmt.Sprintf("conf: value %v of type %T", v, v))
	}
	if _, ok := tb.vals[key]; !ok {
		tb.keys = append(tb.keys, key)
	}
	tb.vals[key] = s
	return tb
}

func (c *conf) String() string {
	var b strings.Builder
	for _, tb := range c.tables {
		fmt.Fprintf(&b, "%s\n", tb.header)
		for _, k := range tb.keys {
			fmt.Fprintf(&b, "%s = %s\n", k, tb.vals[k])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// env is one test's world: its folders, its config file and its NATS.
type env struct {
	t      testing.TB
	dir    string
	watch  string // the drop folder
	remote string // where files arrive
	state  string
	cfg    string // the config file
	conf   conf
	nats   *natsServer // nil with the embedded server
}

// newEnv prepares folders and a config with the [agent] table. Call one of
// externalNATS or embeddedNATS, add targets and watches, then writeConf.
func newEnv(t testing.TB) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{
		t:      t,
		dir:    dir,
		watch:  filepath.Join(dir, "drop"),
		remote: filepath.Join(dir, "remote"),
		state:  filepath.Join(dir, "state"),
		cfg:    filepath.Join(dir, "agent.toml"),
	}
	for _, d := range []string{e.watch, e.remote} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.conf.add("[agent]").
		set("name", agentName).
		set("state_dir", e.state).
		set("shutdown_grace", "5s")
	if os.Getenv("DROPSHIP_E2E_DEBUG") == "1" {
		// The agent's debug lines (the watcher's decisions among them)
		// in the output a failing test prints.
		e.conf.get("[agent]").set("log_level", "debug")
	}
	return e
}

// externalNATS starts an in-process nats-server with JetStream and points the
// config at it; the agent creates the stream.
func (e *env) externalNATS() *natsServer {
	e.t.Helper()
	e.nats = startNATS(e.t, -1, filepath.Join(e.dir, "nats-store"))
	e.conf.get("[nats]").
		set("url", e.nats.url()).
		set("auto_create_stream", true)
	return e.nats
}

// embeddedNATS makes the agent start its own nats-server on a free port and
// returns the URL clients use.
func (e *env) embeddedNATS() string {
	e.t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(e.t))
	e.conf.get("[nats]").
		set("url", "").
		set("embedded_listen", addr)
	return "nats://" + addr
}

// target adds a [[target]] with fast retries.
func (e *env) target(name, host string, port int, user string) *table {
	return e.conf.add("[[target]]").
		set("name", name).
		set("host", host).
		set("port", port).
		set("user", user).
		set("remote_dir", e.remote).
		set("connect_timeout", "10s").
		set("retry_backoff", "200ms").
		set("retry_backoff_max", "1s")
}

// watchFor adds a [[watch]] of the drop folder for target.
func (e *env) watchFor(target string) *table {
	return e.conf.add("[[watch]]").
		set("path", e.watch).
		set("target", target).
		set("settle", settle)
}

// writeConf writes the config file.
func (e *env) writeConf() {
	e.t.Helper()
	if err := os.WriteFile(e.cfg, []byte(e.conf.String()), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// secretFile writes a file only its owner can read and returns its path.
func (e *env) secretFile(name, content string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// sftpdServer starts the built-in SFTP server with one password account.
func sftpdServer(t testing.TB, home, user, password string) *sftpd.Server {
	t.Helper()
	srv, err := sftpd.New(sftpd.Config{
		Listen: "127.0.0.1:0",
		Home:   home,
		Users:  map[string]sftpd.Account{user: {Password: password}},
	})
	if err != nil {
		t.Fatalf("start sftpd: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// sftpdTarget adds a target for srv with a password login and its pinned
// host key.
func (e *env) sftpdTarget(name string, srv *sftpd.Server, user, password string) *table {
	return e.target(name, "127.0.0.1", srv.Port(), user).
		set("password_file", e.secretFile(name+".password", password+"\n")).
		set("host_key", srv.HostKeyFingerprint())
}

// otherFingerprint is the fingerprint of a freshly made key: a pin no server
// matches.
func otherFingerprint(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(k)
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// natsServer is an in-process nats-server with JetStream that can be
// stopped and started again on the same port with the same store.
type natsServer struct {
	t        testing.TB
	port     int
	storeDir string
	mu       sync.Mutex
	srv      *server.Server
}

func startNATS(t testing.TB, port int, storeDir string) *natsServer {
	t.Helper()
	n := &natsServer{t: t, port: port, storeDir: storeDir}
	n.start()
	n.port = n.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) start() {
	opts := natstest.DefaultTestOptions
	opts.Port = n.port
	opts.JetStream = true
	opts.StoreDir = n.storeDir
	srv := natstest.RunServer(&opts)
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// stop shuts the server down, as an outage would; idempotent.
func (n *natsServer) stop() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// restart starts the stopped server again on the same port and store.
func (n *natsServer) restart() { n.start() }

// received is one message a collector got.
type received struct {
	subject string
	msgID   string // the Nats-Msg-Id header
	raw     []byte
	ev      events.Event
}

// transfer decodes the data of a transfer lifecycle event.
func (r received) transfer(t testing.TB) events.Transfer {
	t.Helper()
	d, err := r.ev.Transfer()
	if err != nil {
		t.Fatalf("event %s on %s: %v\n%s", r.ev.ID, r.subject, err, r.raw)
	}
	return d
}

// collector records every dropship message on a NATS server from the moment
// it subscribed, reconnecting after an outage.
type collector struct {
	t   testing.TB
	mu  sync.Mutex
	got []received
	bad []string
}

// collect subscribes to everything under the test prefix at url.
func collect(t testing.TB, url string) *collector {
	t.Helper()
	c := &collector{t: t}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	_, err = nc.Subscribe(prefix+".>", func(m *nats.Msg) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if strings.Contains(m.Subject, ".ctl.") || strings.HasPrefix(m.Subject, "$") {
			return
		}
		ev, err := events.ParseMsg(m)
		if err != nil {
			c.bad = append(c.bad, fmt.Sprintf("%s: %v", m.Subject, err))
			return
		}
		c.got = append(c.got, received{subject: m.Subject, msgID: m.Header.Get(jetstream.MsgIDHeader), raw: m.Data, ev: ev})
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, b := range c.bad {
			t.Errorf("a message on a dropship subject is not a dropship event: %s", b)
		}
	})
	return c
}

// all returns what was received so far, in order.
func (c *collector) all() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.got...)
}

// ofType returns the messages of CloudEvents type typ.
func (c *collector) ofType(typ string) []received { return filterType(c.all(), typ) }

func filterType(msgs []received, typ string) []received {
	var out []received
	for _, m := range msgs {
		if m.ev.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

// forFile returns the transfer lifecycle events of local path p.
func forFile(t testing.TB, msgs []received, p string) []received {
	t.Helper()
	var out []received
	for _, m := range msgs {
		if _, ok := m.ev.TransferState(); ok && m.transfer(t).LocalPath == p {
			out = append(out, m)
		}
	}
	return out
}

// storedEvents reads every event in the JetStream stream at url.
func storedEvents(t testing.TB, url string) []received {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s at %s: %v", stream, url, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []received
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stream %s message %d: %v", stream, seq, err)
		}
		ev, err := events.ParseHeaders(m.Header, m.Data)
		if err != nil {
			t.Fatalf("stream %s message %d on %s: %v", stream, seq, m.Subject, err)
		}
		ev.NATSSubject = m.Subject
		out = append(out, received{subject: m.Subject, msgID: m.Header.Get(jetstream.MsgIDHeader), raw: m.Data, ev: ev})
	}
	return out
}

// uniqueIDs returns the distinct event ids among msgs.
func uniqueIDs(msgs []received) map[string]bool {
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[m.ev.ID] = true
	}
	return ids
}

// writeFile writes a file in one go.
func writeFile(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// randomBytes returns n bytes of random data.
func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sameContent reports whether the file at p holds exactly want.
func sameContent(p string, want []byte) bool {
	got, err := os.ReadFile(p)
	return err == nil && bytes.Equal(got, want)
}

// exists reports whether p exists.
func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// names lists the entries of dir (nil when it cannot be read).
func names(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Name()
	}
	return out
}

// partials lists the temporary upload files left in dir.
func partials(dir string) []string {
	var out []string
	for _, n := range names(dir) {
		if strings.HasSuffix(n, ".part") || strings.HasPrefix(n, ".dropship-") {
			out = append(out, n)
		}
	}
	return out
}

// jsonObject decodes raw into a map, to see which fields a message really has.
func jsonObject(t testing.TB, raw []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, raw)
	}
	return m
}
