package e2e

// Helpers of the attack tests (issue 17 point 7): whoever can write into a
// watch folder is untrusted, and these tests do what such a writer would.
//
//	DROPSHIP_REQUIRE_SSHD=1 go test -race -run TestAttack -v ./internal/e2e/

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sshdtest"
)

// attackUserName is the unprivileged account the agent runs as when the
// tests run as root. It is created (useradd) only when it does not exist;
// nobody is used when it cannot be created.
const attackUserName = "dropship-e2e"

// agentUser is who the agent runs as in one variant of an attack test.
type agentUser struct {
	name     string
	uid, gid int
	switched bool // the agent runs with SysProcAttr.Credential as this user
}

var (
	unprivOnce sync.Once
	unprivUser *agentUser
	unprivErr  error
)

// unprivileged returns the unprivileged account, creating it if needed.
func unprivileged(t testing.TB) *agentUser {
	t.Helper()
	unprivOnce.Do(func() {
		u, err := user.Lookup(attackUserName)
		if err != nil {
			out, uerr := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
				"--shell", "/usr/sbin/nologin", "--user-group", attackUserName).CombinedOutput()
			if uerr == nil {
				u, err = user.Lookup(attackUserName)
			} else {
				fmt.Fprintf(os.Stderr, "attack tests: useradd %s: %v: %s; using nobody\n", attackUserName, uerr, out)
				u, err = user.Lookup("nobody")
			}
		}
		if err != nil {
			unprivErr = err
			return
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		unprivUser = &agentUser{name: u.Username, uid: uid, gid: gid, switched: true}
	})
	if unprivErr != nil {
		t.Fatalf("no unprivileged account to run the agent as: %v", unprivErr)
	}
	return unprivUser
}

// forEachAgentUser runs f as parallel subtests: "root" with the agent
// running as the test's own user (root in CI), and "unprivileged" with the
// agent running as an unprivileged account, which is skipped only when the
// test does not run as root.
func forEachAgentUser(t *testing.T, f func(t *testing.T, u *agentUser)) {
	t.Run("root", func(t *testing.T) {
		t.Parallel()
		name := "root"
		if os.Geteuid() != 0 {
			name = fmt.Sprintf("uid %d (not root)", os.Geteuid())
		}
		f(t, &agentUser{name: name, uid: os.Geteuid(), gid: os.Getegid()})
	})
	t.Run("unprivileged", func(t *testing.T) {
		t.Parallel()
		if os.Geteuid() != 0 {
			t.Skip("the agent can run as another user only when the test runs as root")
		}
		f(t, unprivileged(t))
	})
}

// attackEnv is an env whose files the agent's user owns.
type attackEnv struct {
	*env
	u      *agentUser
	bin    string // the binary the agent runs (a copy the agent's user can execute)
	stage  string // the attacker's scratch folder: same file system, outside every watch
	secret string // a file outside every watch that the agent's user can read
	// secretData is its content; every line holds secretToken, so that even a
	// fragment of it is recognized.
	secretData  []byte
	secretSHA   string
	secretToken string
}

// newAttackEnv prepares an env for u: an unprivileged agent gets its own copy
// of the binary, and the folders it must read or write are its own. The
// secret is created in a folder next to the watch folders, mode 0600 and
// owned by the agent's user: the agent can read it, and must still never
// send it.
func newAttackEnv(t testing.TB, u *agentUser) *attackEnv {
	t.Helper()
	e := &attackEnv{env: newEnv(t), u: u, bin: binary}
	if u.switched {
		// t.TempDir's folders are 0700: let the agent's user through.
		for _, d := range []string{filepath.Dir(e.dir), e.dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		e.bin = filepath.Join(e.dir, "bin", "dropship")
		copyFile(t, binary, e.bin, 0o755)
		if err := os.Chmod(filepath.Dir(e.bin), 0o755); err != nil {
			t.Fatal(err)
		}
		e.chown(e.watch)
	}
	e.mkdirOwned(e.state)
	e.stage = filepath.Join(e.dir, "stage")
	if err := os.Mkdir(e.stage, 0o700); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(e.dir, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	var tok [8]byte
	for i := range tok {
		tok[i] = byte(rand.IntN(256))
	}
	e.secretToken = "SECRET-" + hex.EncodeToString(tok[:])
	var b bytes.Buffer
	for i := range 64 {
		fmt.Fprintf(&b, "%s:line-%02d:root:$6$not.a.real.hash$%s:19000:0:99999:7:::\n", e.secretToken, i, strings.Repeat("x", 40))
	}
	e.secretData = b.Bytes()
	e.secretSHA = sha256Hex(e.secretData)
	e.secret = filepath.Join(outside, "shadow")
	e.ownedFile(e.secret, e.secretData)
	return e
}

// chown gives p to the agent's user (a no-op when it runs as the test's user).
func (e *attackEnv) chown(p string) {
	e.t.Helper()
	if !e.u.switched {
		return
	}
	if err := os.Lchown(p, e.u.uid, e.u.gid); err != nil {
		e.t.Fatal(err)
	}
}

// mkdirOwned creates folder p (and its parents) for the agent's user.
func (e *attackEnv) mkdirOwned(p string) {
	e.t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		e.t.Fatal(err)
	}
	for d := p; d != e.dir && strings.HasPrefix(d, e.dir); d = filepath.Dir(d) {
		e.chown(d)
	}
}

// ownedFile writes a 0600 file that the agent's user owns.
func (e *attackEnv) ownedFile(p string, data []byte) string {
	e.t.Helper()
	if err := os.WriteFile(p, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.chown(p)
	return p
}

// ownedSecret is env.secretFile for the agent's user.
func (e *attackEnv) ownedSecret(name, content string) string {
	e.t.Helper()
	return e.ownedFile(filepath.Join(e.dir, name), []byte(content))
}

// sshdKeyTarget adds a key-login target for the real sshd, as sshdTarget
// does, with the client key and known_hosts copied for the agent's user.
func (e *attackEnv) sshdKeyTarget(name string, srv *sshdtest.Server, remoteDir string) *table {
	e.t.Helper()
	kh := filepath.Join(e.dir, name+".known_hosts")
	srv.WriteKnownHosts(e.t, kh)
	e.chown(kh)
	key, err := os.ReadFile(srv.ClientKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.target(name, srv.Host, srv.Port, srv.User).
		set("remote_dir", remoteDir).
		set("identity_file", e.ownedSecret(name+".key", string(key))).
		set("host_key", "strict").
		set("known_hosts_file", kh)
}

// sftpdPasswordTarget adds a password-login target for the built-in server.
func (e *attackEnv) sftpdPasswordTarget(name string, port int, fingerprint, user, password, remoteDir string) *table {
	return e.target(name, "127.0.0.1", port, user).
		set("remote_dir", remoteDir).
		set("password_file", e.ownedSecret(name+".password", password+"\n")).
		set("host_key", fingerprint)
}

// watchFolder adds a [[watch]] of folder dir (created for the agent's user).
func (e *attackEnv) watchFolder(dir, target string) *table {
	e.t.Helper()
	e.mkdirOwned(dir)
	return e.conf.add("[[watch]]").
		set("path", dir).
		set("target", target).
		set("settle", settle)
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// startAgent runs `dropship run -c cfg` as the env's agent user, like
// startAgent, and waits until it says it started.
func (e *attackEnv) startAgent() *proc {
	t := e.t
	t.Helper()
	p := newProc(t, e.bin, fmt.Sprintf("dropship run -c %s (as %s)", e.cfg, e.u.name), "run", "-c", e.cfg)
	p.cmd.Dir = e.dir
	if e.u.switched {
		home := filepath.Join(e.dir, "home")
		e.mkdirOwned(home)
		p.cmd.Env = append(os.Environ(), "HOME="+home, "USER="+e.u.name, "LOGNAME="+e.u.name)
		p.cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(e.u.uid), Gid: uint32(e.u.gid), NoSetGroups: false, Groups: []uint32{}},
		}
	}
	p.start()
	p.waitLog(30*time.Second, "agent started")
	if e.u.switched {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err == nil && !bytes.Contains(st, []byte(fmt.Sprintf("\nUid:\t%d\t%d", e.u.uid, e.u.uid))) {
			t.Fatalf("the agent does not run as uid %d:\n%s", e.u.uid, st)
		}
	}
	return p
}

// newRand returns a random source seeded from the clock, and logs the seed;
// DROPSHIP_ATTACK_SEED=N replays a run's random choices (not its timing).
func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DROPSHIP_ATTACK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DROPSHIP_ATTACK_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("random seed %d (set DROPSHIP_ATTACK_SEED=%d to replay the choices)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// lockedRand is a rand.Rand several goroutines share.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (l *lockedRand) intN(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.IntN(n)
}

func (l *lockedRand) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(l.intN(int(hi-lo)+1))
}

func (l *lockedRand) bytes(n int) []byte {
	var seed [32]byte
	l.mu.Lock()
	for i := range seed {
		seed[i] = byte(l.r.Uint32())
	}
	l.mu.Unlock()
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

// lifecycleEvent is one transfer lifecycle event as the tracker keeps it.
type lifecycleEvent struct {
	state    events.TransferState
	id       string
	time     time.Time
	received time.Time
	data     events.Transfer
}

func (ev lifecycleEvent) class() string {
	if ev.data.Error == nil {
		return ""
	}
	return ev.data.Error.Class
}

func (ev lifecycleEvent) String() string {
	s := string(ev.state)
	if ev.data.SHA256 != "" {
		s += " sha256 " + short(ev.data.SHA256)
	}
	if ev.data.Error != nil {
		s += fmt.Sprintf(" [%s: %s]", ev.data.Error.Class, ev.data.Error.Message)
	}
	return s
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// tracker indexes transfer lifecycle events by local path as they arrive,
// deduplicated by id, so that attack goroutines can wait for the moment a
// file is queued or started without copying the whole collector each time.
type tracker struct {
	t      testing.TB
	mu     sync.Mutex
	byPath map[string][]lifecycleEvent
	seen   map[string]bool
	last   time.Time // when the last new event arrived
	total  int
}

func track(t testing.TB, url string) *tracker {
	t.Helper()
	tr := &tracker{t: t, byPath: map[string][]lifecycleEvent{}, seen: map[string]bool{}}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	_, err = nc.Subscribe(prefix+".*.*.transfer.*", func(m *nats.Msg) {
		ev, err := events.ParseMsg(m)
		if err != nil {
			return // the collector reports it
		}
		st, ok := ev.TransferState()
		if !ok {
			return
		}
		d, err := ev.Transfer()
		if err != nil {
			return
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if tr.seen[ev.ID] {
			return
		}
		tr.seen[ev.ID] = true
		tr.last = time.Now()
		tr.total++
		tr.byPath[d.LocalPath] = append(tr.byPath[d.LocalPath], lifecycleEvent{state: st, id: ev.ID, time: ev.Time, received: time.Now(), data: d})
	})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return tr
}

// of returns the lifecycle events of local path p, in the order published.
// p is compared as the JSON of events carries it (invalid UTF-8 replaced).
func (tr *tracker) of(p string) []lifecycleEvent {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]lifecycleEvent(nil), tr.byPath[jsonString(p)]...)
}

// has reports whether p has an event in state st.
func (tr *tracker) has(p string, st events.TransferState) bool {
	for _, ev := range tr.of(p) {
		if ev.state == st {
			return true
		}
	}
	return false
}

// waitFor waits up to timeout for an event of p in state st.
func (tr *tracker) waitFor(p string, st events.TransferState, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !tr.has(p, st) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// quiet waits (at most timeout) until no new lifecycle event arrived for d.
func (tr *tracker) quiet(d, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		tr.mu.Lock()
		last := tr.last
		tr.mu.Unlock()
		if time.Since(last) >= d {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// all returns every path's events.
func (tr *tracker) all() map[string][]lifecycleEvent {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make(map[string][]lifecycleEvent, len(tr.byPath))
	for p, evs := range tr.byPath {
		out[p] = append([]lifecycleEvent(nil), evs...)
	}
	return out
}

func states(evs []lifecycleEvent) string {
	s := make([]string, len(evs))
	for i, ev := range evs {
		s[i] = ev.String()
	}
	return strings.Join(s, " → ")
}

// jsonString is s as it comes back from a JSON round trip.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// jsonStrings returns every string in the JSON value raw, decoded, one a line.
func jsonStrings(raw []byte) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return ""
	}
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			b.WriteString(v)
			b.WriteByte('\n')
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
	return b.String()
}

// remoteLeak is a remote entry that holds (or points at) the secret.
type remoteLeak struct {
	path string
	what string
}

// scanRemote walks root (the remote folder, temporary upload files
// included) and returns every entry that holds the secret, a fragment of it,
// or points at it, and the sha256 of every regular file by path.
func (e *attackEnv) scanRemote(root string) ([]remoteLeak, map[string]string) {
	var leaks []remoteLeak
	sums := map[string]string{}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			dest, _ := os.Readlink(p)
			leaks = append(leaks, remoteLeak{p, fmt.Sprintf("a symlink to %q appeared on the remote", dest)})
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			sum := sha256Hex(b)
			sums[p] = sum
			if sum == e.secretSHA {
				leaks = append(leaks, remoteLeak{p, fmt.Sprintf("holds the secret %s, all of it (sha256 %s)", e.secret, short(sum))})
			} else if i := bytes.Index(b, []byte(e.secretToken)); i >= 0 {
				end := min(len(b), i+80)
				leaks = append(leaks, remoteLeak{p, fmt.Sprintf("holds %d bytes with part of the secret %s, e.g. %q", len(b), e.secret, b[i:end])})
			} else if st, err := os.Stat(p); err == nil {
				if fi, err := os.Stat(e.secret); err == nil && os.SameFile(st, fi) {
					leaks = append(leaks, remoteLeak{p, "is a hard link to the secret"})
				}
			}
		}
		return nil
	})
	return leaks, sums
}

// checkNoSecretAnywhere fails the test for every remote file, published
// message or line of the agent's output that holds the secret's content or
// its sha256.
func (e *attackEnv) checkNoSecretAnywhere(t testing.TB, c *collector, agent *proc, remote string) {
	t.Helper()
	leaks, _ := e.scanRemote(remote)
	for _, l := range leaks {
		t.Errorf("SECRET LEAKED TO THE REMOTE: %s %s", l.path, l.what)
	}
	bad := 0
	for _, m := range c.all() {
		raw := string(m.raw)
		if strings.Contains(raw, e.secretSHA) || strings.Contains(raw, e.secretToken) {
			if bad++; bad <= 10 {
				t.Errorf("an event on %s carries the secret's sha256 or content:\n%s", m.subject, raw)
			}
		}
	}
	if bad > 10 {
		t.Errorf("… and %d more events with the secret's sha256 or content", bad-10)
	}
	if agent != nil && strings.Contains(agent.logs(), e.secretToken) {
		t.Errorf("the agent's output holds the secret's content")
	}
}

// sha256File returns the hex sha256 of the file at p, or "" if unreadable.
func sha256File(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}
