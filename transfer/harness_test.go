package transfer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
	"golang.org/x/crypto/ssh"
)

// Shared helpers of the integration tests: real OpenSSH clients driven by a
// Client, against a real sshd (internal/sshdtest) or the built-in server
// (internal/sftpd).

const (
	testPassword   = "Sx7-kQ9v-Wm2z"
	sftpdUser      = "alice"
	uploadDeadline = 60 * time.Second
)

// requireClients skips when the OpenSSH clients are missing, unless
// DROPSHIP_REQUIRE_SSHD=1, which makes it a failure.
func requireClients(t *testing.T) {
	t.Helper()
	for _, name := range []string{"ssh", "sftp"} {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv(sshdtest.RequireEnv) == "1" {
				t.Fatalf("%s not found; install openssh-client", name)
			}
			t.Skipf("%s not found; install openssh-client", name)
		}
	}
}

// startSSHD runs a real sshd and returns it with a strict target that logs
// in with its unencrypted key and trusts its host key.
func startSSHD(t *testing.T, opts sshdtest.Options) (*sshdtest.Server, Target) {
	t.Helper()
	requireClients(t)
	srv := sshdtest.Start(t, opts)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	srv.WriteKnownHosts(t, kh)
	return srv, Target{
		Name:           "sshd",
		Host:           srv.Host,
		Port:           srv.Port,
		User:           srv.User,
		Identity:       srv.ClientKey,
		HostKey:        HostKeyStrict,
		KnownHosts:     []string{kh},
		ConnectTimeout: 5 * time.Second,
		StallTimeout:   20 * time.Second,
		Connections:    4,
	}
}

// startSFTPD runs the built-in server with one account (alice) as given, its
// files under a fresh home, and returns it with a strict target for alice
// that trusts its host key.
func startSFTPD(t *testing.T, account sftpd.Account, cfg sftpd.Config) (*sftpd.Server, Target) {
	t.Helper()
	requireClients(t)
	if cfg.Home == "" {
		cfg.Home = t.TempDir()
	}
	cfg.Users = map[string]sftpd.Account{sftpdUser: account}
	srv, err := sftpd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(srv.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := Target{
		Name:           "sftpd",
		Host:           "127.0.0.1",
		Port:           srv.Port(),
		User:           sftpdUser,
		HostKey:        HostKeyStrict,
		KnownHosts:     []string{kh},
		ConnectTimeout: 5 * time.Second,
		StallTimeout:   20 * time.Second,
		Connections:    4,
	}
	if account.Password != "" {
		tg.Password = NewSecret([]byte(account.Password))
	}
	return srv, tg
}

// clientKey writes a fresh unencrypted ed25519 key for the built-in server
// and returns its path and public key.
func clientKey(t *testing.T) (string, ssh.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "transfer test")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return p, signer.PublicKey()
}

// controlDir is a short private folder for control sockets: t.TempDir paths
// can exceed the 108-byte limit of a unix socket path.
func controlDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ds")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// newClient returns a Client for tg that is closed when the test ends.
func newClient(t *testing.T, tg Target, opts Options) *Client {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = discard()
	}
	c, err := NewClient(tg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// content is n bytes that differ from file to file and from position to
// position, so a reordered or truncated copy is caught.
func content(seed string, n int) []byte {
	b := make([]byte, n)
	h := uint32(2166136261)
	for i := range len(seed) {
		h = (h ^ uint32(seed[i])) * 16777619
	}
	for i := range b {
		h ^= h << 13
		h ^= h >> 17
		h ^= h << 5
		b[i] = byte(h)
	}
	return b
}

// localItem writes data as a local file named name (below a fresh folder)
// and returns the Item that sends it to rel below remoteDir.
func localItem(t *testing.T, id, name string, data []byte, remoteDir, rel string) Item {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return Item{ID: id, File: f, Local: p, RemoteDir: remoteDir, Rel: rel, Size: int64(len(data))}
}

// upload runs one Upload with a generous deadline.
func upload(t *testing.T, c *Client, items []Item, obs Observer) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), uploadDeadline)
	defer cancel()
	res := c.Upload(ctx, items, obs)
	if len(res) != len(items) {
		t.Fatalf("%d results for %d items", len(res), len(items))
	}
	return res
}

// wantDelivered fails unless every result is a success and each item's file
// is on the remote, byte-identical, under exactly its final name.
func wantDelivered(t *testing.T, items []Item, res []Result) {
	t.Helper()
	for i, it := range items {
		if res[i].Err != nil {
			t.Errorf("%s (%q): %v", it.ID, it.Rel, res[i].Err)
			continue
		}
		if !res[i].Began {
			t.Errorf("%s: succeeded but Began is false", it.ID)
		}
		wantRemote(t, it)
	}
}

// wantRemote fails unless the item's remote file holds its local bytes.
func wantRemote(t *testing.T, it Item) {
	t.Helper()
	want, err := os.ReadFile(it.Local)
	if err != nil {
		t.Error(err)
		return
	}
	got, err := os.ReadFile(it.RemotePath())
	if err != nil {
		t.Errorf("%s: remote file: %v", it.ID, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: remote %q has %d bytes that differ from the %d local bytes", it.ID, it.RemotePath(), len(got), len(want))
	}
}

// wantClass fails unless err is a *Error of class want whose message
// contains every quote.
func wantClass(t *testing.T, err error, want Class, quotes ...string) *Error {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want class %s", want)
	}
	te, ok := err.(*Error)
	if !ok {
		t.Fatalf("error %T %v is not a *Error", err, err)
	}
	if te.Class != want {
		t.Fatalf("class %s, want %s: %v", te.Class, want, err)
	}
	for _, q := range quotes {
		if !strings.Contains(te.Message, q) {
			t.Errorf("message %q does not quote %q", te.Message, q)
		}
	}
	return te
}

// tempFiles lists the temporary files (".dropship-*.part") below dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".dropship-") && strings.HasSuffix(d.Name(), ".part") {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// wantNoTempFiles fails if a temporary file is left below dir.
func wantNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	if left := tempFiles(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

// wantAbsent fails if the file exists.
func wantAbsent(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); err == nil {
		t.Errorf("%s exists", p)
	} else if !os.IsNotExist(err) {
		t.Error(err)
	}
}

// poll waits until cond holds, failing after d.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorder captures everything a Client publishes, safe for concurrent use.
type recorder struct {
	mu       sync.Mutex
	lines    []string
	progress map[string][]Progress
	begun    []string
}

func (r *recorder) observer() Observer {
	return Observer{
		Line: func(id, line string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.lines = append(r.lines, id+": "+line)
		},
		Progress: func(id string, p Progress) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.progress == nil {
				r.progress = map[string][]Progress{}
			}
			r.progress[id] = append(r.progress[id], p)
		},
		Begin: func(id string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.begun = append(r.begun, id)
		},
	}
}

func (r *recorder) connectionLine(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, "connection: "+line)
}

// text is everything recorded, one entry a line, for searching and for
// failure messages.
func (r *recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, l := range r.lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	for id, ps := range r.progress {
		for _, p := range ps {
			fmt.Fprintf(&b, "progress %s: %+v\n", id, p)
		}
	}
	return b.String()
}

func (r *recorder) contains(s string) bool { return strings.Contains(r.text(), s) }
