package transfer

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// Host-key policies against a real sshd (issue 3 points 1 and 2).

// oneFile is a one-item batch into a fresh remote folder.
func oneFile(t *testing.T, id string) ([]Item, string) {
	t.Helper()
	remote := t.TempDir()
	return []Item{localItem(t, id, id+".txt", content(id, 2048), remote, id+".txt")}, remote
}

// wantNothingSent fails if the remote folder holds anything.
func wantNothingSent(t *testing.T, remote string) {
	t.Helper()
	entries, err := os.ReadDir(remote)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("remote folder holds %q", e.Name())
	}
}

// acceptedLogins counts the logins sshd accepted so far.
func acceptedLogins(srv *sshdtest.Server) int {
	return strings.Count(srv.Log(), "Accepted publickey")
}

func TestHostKeyStrictUnknownIsRefused(t *testing.T) {
	t.Parallel()
	srv, tg := startSSHD(t, sshdtest.Options{})
	empty := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tg.KnownHosts = []string{empty}
	for _, shared := range []bool{false, true} {
		items, remote := oneFile(t, "strict")
		opts := Options{Atomic: true}
		if shared {
			opts.ControlDir = controlDir(t)
		}
		res := upload(t, newClient(t, tg, opts), items, Observer{})
		wantClass(t, res[0].Err, ClassHostKeyUnknown, "No ED25519 host key is known for")
		if res[0].Began {
			t.Error("Began is true for a refused host")
		}
		if !ClassHostKeyUnknown.Security() {
			t.Error("an unknown host key is not reported as a security failure")
		}
		wantNothingSent(t, remote)
		if b, _ := os.ReadFile(empty); len(b) != 0 {
			t.Errorf("strict checking wrote the known_hosts file: %q", b)
		}
	}
	if n := acceptedLogins(srv); n != 0 {
		t.Errorf("sshd accepted %d logins from a client that refused its host key", n)
	}
	// Once the key is in the file, strict checking lets the upload through.
	srv.WriteKnownHosts(t, empty)
	items, _ := oneFile(t, "known")
	wantDelivered(t, items, upload(t, newClient(t, tg, Options{Atomic: true}), items, Observer{}))
}

func TestHostKeyAcceptNewThenRotated(t *testing.T) {
	t.Parallel()
	srv, tg := startSSHD(t, sshdtest.Options{})
	kh := filepath.Join(t.TempDir(), "target_known_hosts")
	other := filepath.Join(t.TempDir(), "other_known_hosts")
	tg.HostKey = HostKeyAcceptNew
	tg.KnownHosts = []string{kh, other}

	items, _ := oneFile(t, "first")
	res := upload(t, newClient(t, tg, Options{Atomic: true}), items, Observer{})
	wantDelivered(t, items, res)
	// The key went to the first known_hosts file (hashed or not, the key
	// blob is there) and to no other.
	blob := strings.Fields(srv.KnownHostsLine)[2]
	if b, err := os.ReadFile(kh); err != nil || !strings.Contains(string(b), blob) {
		t.Errorf("accept-new did not record the key in %s: %q, %v", kh, b, err)
	}
	if _, err := os.Stat(other); err == nil {
		t.Errorf("accept-new wrote to the second known_hosts file")
	}

	// A second upload with the key now known still works.
	items, _ = oneFile(t, "second")
	wantDelivered(t, items, upload(t, newClient(t, tg, Options{Atomic: true}), items, Observer{}))

	// The server's key changes: refused as a security failure, whether the
	// policy is accept-new or strict, and with a shared connection too.
	srv.RotateHostKey(t)
	before := acceptedLogins(srv)
	for _, policy := range []string{HostKeyAcceptNew, HostKeyStrict} {
		for _, shared := range []bool{false, true} {
			tg.HostKey = policy
			opts := Options{Atomic: true}
			if shared {
				opts.ControlDir = controlDir(t)
			}
			items, remote := oneFile(t, "rotated")
			res := upload(t, newClient(t, tg, opts), items, Observer{})
			e := wantClass(t, res[0].Err, ClassHostKeyChanged)
			if !strings.Contains(e.Message, "REMOTE HOST IDENTIFICATION HAS CHANGED") && !strings.Contains(e.Message, "has changed and you have requested strict checking") {
				t.Errorf("%s shared=%v: message does not quote ssh's warning: %q", policy, shared, e.Message)
			}
			if !e.Class.Security() || e.Class.Retryable() {
				t.Errorf("a changed host key must be a non-retryable security failure")
			}
			wantNothingSent(t, remote)
		}
	}
	if n := acceptedLogins(srv) - before; n != 0 {
		t.Errorf("sshd accepted %d logins after its key changed", n)
	}
	if b, _ := os.ReadFile(kh); strings.Contains(string(b), strings.Fields(srv.KnownHostsLine)[2]) {
		t.Error("the changed key was written to known_hosts")
	}
}

func TestHostKeyPinned(t *testing.T) {
	t.Parallel()
	srv, tg := startSSHD(t, sshdtest.Options{})
	tg.KnownHosts = nil
	tg.HostKey = srv.HostKeyFingerprint
	for _, shared := range []bool{false, true} {
		opts := Options{Atomic: true}
		if shared {
			opts.ControlDir = controlDir(t)
		}
		items, _ := oneFile(t, "pinned")
		wantDelivered(t, items, upload(t, newClient(t, tg, opts), items, Observer{}))
	}

	// FetchHostKey shows the fingerprint to pin, and logs in nowhere.
	before := acceptedLogins(srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hk, err := FetchHostKey(ctx, tg, Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	if hk.Fingerprint != srv.HostKeyFingerprint || hk.Type != "ED25519" {
		t.Errorf("FetchHostKey = %+v, want ED25519 %s", hk, srv.HostKeyFingerprint)
	}
	if n := acceptedLogins(srv) - before; n != 0 {
		t.Errorf("FetchHostKey logged in %d times", n)
	}
}

// A wrong pin is refused before any credential is sent: the built-in server
// counts zero password attempts.
func TestHostKeyPinnedMismatchSendsNoPassword(t *testing.T) {
	t.Parallel()
	kbd := &sftpd.KeyboardInteractive{Questions: []sftpd.Question{{Prompt: "Password: ", Answer: testPassword}}}
	srv, tg := startSFTPD(t, sftpd.Account{Password: testPassword, KeyboardInteractive: kbd}, sftpd.Config{})
	wrong := "SHA256:" + strings.Repeat("A", 43)
	tg.HostKey = wrong
	tg.KnownHosts = nil
	for _, shared := range []bool{false, true} {
		opts := Options{Atomic: true}
		if shared {
			opts.ControlDir = controlDir(t)
		}
		items, remote := oneFile(t, "mismatch")
		res := upload(t, newClient(t, tg, opts), items, Observer{})
		e := wantClass(t, res[0].Err, ClassHostKeyMismatch, srv.HostKeyFingerprint(), wrong)
		if !e.Class.Security() {
			t.Error("a pin mismatch is not a security failure")
		}
		wantNothingSent(t, remote)
	}
	st := srv.Stats()
	if st.AuthAttempts["password"] != 0 || st.AuthAttempts["keyboard-interactive"] != 0 || st.Logins != 0 {
		t.Errorf("credentials reached a server whose key did not match the pin: %+v", st)
	}
	if st.Connections == 0 {
		t.Error("the client never connected: the test proves nothing")
	}
}

// The user's and the system's ssh_config cannot weaken the host-key policy.
// ssh reads ~/.ssh/config from the passwd entry's home, not from $HOME, so
// the clients run in a private mount namespace where a hostile
// ~/.ssh/config and /etc/ssh/ssh_config are mounted over the real ones.
func TestHostKeyPolicyIgnoresHostileSSHConfig(t *testing.T) {
	t.Parallel()
	srv, tg := startSSHD(t, sshdtest.Options{})
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
		t.Skipf("home folder %s is missing", home)
	}
	if out, err := exec.Command("unshare", "-m", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot make a mount namespace (unshare -m: %v %s)", err, out)
	}
	fake := t.TempDir()
	hostile := "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  GlobalKnownHostsFile /dev/null\n  CheckHostIP no\n"
	if err := os.MkdirAll(filepath.Join(fake, "home", ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(fake, "home", ".ssh", "config"), filepath.Join(fake, "ssh_config")} {
		if err := os.WriteFile(p, []byte(hostile), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	wrap := func(prog string) string {
		real, err := exec.LookPath(prog)
		if err != nil {
			t.Fatal(err)
		}
		mounts := "mount --bind " + shq(filepath.Join(fake, "home")) + " " + shq(home)
		if _, err := os.Stat("/etc/ssh/ssh_config"); err == nil {
			mounts += " && mount --bind " + shq(filepath.Join(fake, "ssh_config")) + " /etc/ssh/ssh_config"
		}
		w := filepath.Join(fake, prog)
		script := "#!/bin/sh\nexec unshare -m sh -c " + shq(mounts+` && exec "$0" "$@"`) + " " + shq(real) + ` "$@"` + "\n"
		if err := os.WriteFile(w, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return w
	}
	sshW := wrap("ssh")

	// Control: inside the namespace, ssh does read the hostile config.
	out, err := exec.Command(sshW, "-G", "-p", "22", "127.0.0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("ssh -G through the wrapper: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "stricthostkeychecking false") || !strings.Contains(string(out), "userknownhostsfile /dev/null") {
		t.Fatalf("the hostile config is not in effect, the test would prove nothing:\n%s", out)
	}

	empty := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tg.KnownHosts = []string{empty}
	for _, shared := range []bool{false, true} {
		opts := Options{Atomic: true, SSH: sshW}
		if shared {
			opts.ControlDir = controlDir(t)
		}
		items, remote := oneFile(t, "hostile")
		res := upload(t, newClient(t, tg, opts), items, Observer{})
		wantClass(t, res[0].Err, ClassHostKeyUnknown, "No ED25519 host key is known for")
		wantNothingSent(t, remote)
	}
	// A pin stays a pin.
	tg.HostKey = "SHA256:" + strings.Repeat("B", 43)
	items, remote := oneFile(t, "hostile-pin")
	res := upload(t, newClient(t, tg, Options{Atomic: true, SSH: sshW}), items, Observer{})
	wantClass(t, res[0].Err, ClassHostKeyMismatch, srv.HostKeyFingerprint)
	wantNothingSent(t, remote)
	if n := acceptedLogins(srv); n != 0 {
		t.Errorf("sshd accepted %d logins", n)
	}
	// Nor can the operator's ssh_options: the engine's values come first.
	tg.HostKey = HostKeyStrict
	tg.SSHOptions = []string{"StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"}
	items, remote = oneFile(t, "options")
	res = upload(t, newClient(t, tg, Options{Atomic: true}), items, Observer{})
	wantClass(t, res[0].Err, ClassHostKeyUnknown)
	wantNothingSent(t, remote)
}

// shq quotes s for sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
