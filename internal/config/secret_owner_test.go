package config

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ownedInfo is a file's information with only its owner set.
type ownedInfo struct{ uid uint32 }

func (o ownedInfo) Name() string       { return "f" }
func (o ownedInfo) Size() int64        { return 1 }
func (o ownedInfo) Mode() fs.FileMode  { return 0o600 }
func (o ownedInfo) ModTime() time.Time { return time.Time{} }
func (o ownedInfo) IsDir() bool        { return false }
func (o ownedInfo) Sys() any           { return &syscall.Stat_t{Uid: o.uid} }

func TestCheckOwner(t *testing.T) {
	tests := []struct {
		name       string
		owner      uint32
		euid       int
		credential bool
		want       string // "" for accepted
	}{
		{"own file", 4242001, 4242001, false, ""},
		{"own credential", 4242001, 4242001, true, ""},
		{"credential owned by root", 0, 4242001, true, ""},
		{"file owned by root", 0, 4242001, false, "belongs to root, not to uid 4242001, the user dropship runs as: run chown 4242001 /f"},
		{"file owned by another user", 4242002, 4242001, false, "belongs to uid 4242002, not to uid 4242001, the user dropship runs as: run chown 4242001 /f"},
		{"credential owned by another user", 4242002, 4242001, true, "not to uid 4242001 or root"},
		{"root checking another user's file", 4242002, 0, false, "belongs to uid 4242002, not to root, the user this dropship runs as: run it as the service's user (sudo -u 4242002 dropship ...), or run chown root /f"},
		{"root's own file", 0, 0, false, ""},
	}
	for _, tt := range tests {
		err := checkOwner("/f", ownedInfo{tt.owner}, tt.euid, tt.credential)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v; want %q", tt.name, err, tt.want)
		}
	}
}

// needRoot skips a test that must create files owned by another user.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files owned by another user (uid 65534)")
	}
}

const otherUID = 65534

func chown(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Lchown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// The secret checks of Load: owner, symlinks, public keys, credentials.
// No message may hold a secret.
func TestLoadSecretOwners(t *testing.T) {
	const secret = "do-not-print-me"
	dir := t.TempDir()
	mine := writeFile(t, dir, "mine.pass", secret, 0o600)
	if err := os.Symlink(mine, filepath.Join(dir, "link-to-mine")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n"+secret+"\n-----END OPENSSH PRIVATE KEY-----\n", 0o600)
	writeFile(t, dir, "id_ed25519.pub", "ssh-ed25519 AAAAC3Nza "+secret+"\n", 0o644)
	writeFile(t, dir, "pubkey", "ssh-ed25519 AAAAC3Nza "+secret+"\n", 0o644)
	writeFile(t, dir, "sk.key", "sk-ssh-ed25519@openssh.com AAAA "+secret+"\n", 0o600)

	src := `
[[target]]
name = "ok"
host = "h"
user = "u"
password_file = "mine.pass"
identity_file = "id_ed25519"
passphrase_file = "link-to-mine"

[[target]]
name = "pub"
host = "h"
user = "u"
identity_file = "id_ed25519.pub" #! target.identity_file: identity_file must be the private key; $DIR/id_ed25519.pub looks like a public key: use $DIR/id_ed25519.pub without .pub

[[target]]
name = "pub2"
host = "h"
user = "u"
identity_file = "pubkey" #! target.identity_file: identity_file must be the private key; $DIR/pubkey looks like a public key: use the private key file

[[target]]
name = "sk"
host = "h"
user = "u"
identity_file = "sk.key" #! target.identity_file: $DIR/sk.key looks like a public key
`
	cfg := loadCase(t, dir, src)
	if cfg != nil {
		t.Error("Load returned a config with problems")
	}
	_, err := Load(filepath.Join(dir, "agent.toml"))
	if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "chmod") {
		t.Errorf("problems hold a secret or advise chmod for a public key:\n%v", err)
	}
}

func TestLoadSecretOthers(t *testing.T) {
	needRoot(t)
	const secret = "do-not-print-me"
	dir, creds := t.TempDir(), t.TempDir()
	theirs := writeFile(t, dir, "theirs.pass", secret, 0o600)
	chown(t, theirs, otherUID)
	link := filepath.Join(dir, "link-to-theirs")
	if err := os.Symlink(theirs, link); err != nil {
		t.Fatal(err)
	}
	mine := writeFile(t, dir, "mine.pass", secret, 0o600)
	theirLink := filepath.Join(dir, "their-link-to-mine")
	if err := os.Symlink(mine, theirLink); err != nil {
		t.Fatal(err)
	}
	chown(t, theirLink, otherUID) // the target decides, and it is ours
	writeFile(t, creds, "root.pass", secret, 0o400)
	chown(t, writeFile(t, creds, "other.pass", secret, 0o400), otherUID)
	t.Setenv("CREDENTIALS_DIRECTORY", creds)

	src := `
[[target]]
name = "a"
host = "h"
user = "u"
password_file = "theirs.pass" #! target.password_file: secret file $DIR/theirs.pass belongs to nobody, not to root
passphrase_file = "link-to-theirs" #! target.passphrase_file: secret file $DIR/link-to-theirs is a symbolic link to $DIR/theirs.pass, which belongs to nobody
identity_file = "their-link-to-mine"

[[target]]
name = "b"
host = "h"
user = "u"
password_file = "credential:root.pass"

[[target]]
name = "c"
host = "h"
user = "u"
password_file = "credential:other.pass" #! target.password_file: belongs to nobody, not to root
`
	if loadCase(t, dir, strings.ReplaceAll(src, "nobody", userName(otherUID))) != nil {
		t.Error("Load returned a config with problems")
	}
	_, err := Load(filepath.Join(dir, "agent.toml"))
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("problems hold a secret:\n%v", err)
	}
	if _, err := ReadSecret(link); err == nil {
		t.Error("ReadSecret followed a symlink to another user's file")
	}
	if _, err := ReadSecret("credential:root.pass"); err != nil {
		t.Errorf("ReadSecret of a root-owned credential: %v", err)
	}
}
