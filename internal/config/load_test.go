package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes content to dir/name with mode perm and returns its path.
func writeFile(t *testing.T, dir, name, content string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // umask may have narrowed perm
		t.Fatal(err)
	}
	return p
}

// loadCase writes src, with $DIR replaced by dir, to dir/agent.toml, loads
// it and checks its markers.
func loadCase(t *testing.T, dir, src string) *Config {
	t.Helper()
	src = strings.ReplaceAll(src, "$DIR", dir)
	file := writeFile(t, dir, "agent.toml", src, 0o644)
	cfg, err := Load(file)
	checkProblems(t, file, src, err)
	return cfg
}

func TestLoadManyProblems(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "acme.pass", "secret\n", 0o640)
	writeFile(t, dir, "drop/existing/keep", "", 0o644)
	loadCase(t, dir, `
[agent]
log_levle = "debug" #! agent.log_levle: unknown key; did you mean log_level?
shutdown_grace = 30 #! agent.shutdown_grace: must be a duration string such as "30s", not an integer

[[target]]
name = "acme"
host = "sftp.acme.example"
port = "22"                      #! target.port: must be an integer, not a string
user = "upload"
password_file = "acme.pass"      #! target.password_file: is open to group or others (mode 0640); run chmod 600 $DIR/acme.pass
stall_timeout = "1 minute"       #! target.stall_timeout: "1 minute" is not a duration; write it like

[[watch]]
path = "drop/missing"            #! watch.path: folder $DIR/drop/missing does not exist
target = "acme"

[[watch]]
path = "drop/existing"
target = "acmee"                 #! watch.target: no [[target]] named "acmee"; did you mean acme?
`)
}

func TestLoadWatchFolders(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "file", "x", 0o644)
	writeFile(t, dir, "real/a/x", "", 0o644)
	writeFile(t, dir, "sent", "x", 0o644)
	if err := os.Symlink(filepath.Join(dir, "real", "a"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	loadCase(t, dir, `
[[target]]
name = "a"
host = "h"
user = "u"

[[watch]]
path = "file" #! watch.path: $DIR/file is not a folder
target = "a"

[[watch]]
path = "real"
target = "a"
archive_dir = "sent" #! watch.archive_dir: $DIR/sent exists and is not a folder

[[watch]]
path = "link" #! watch.path: $DIR/link, once symlinks are resolved: $DIR/real/a is inside $DIR/real, watched by the [[watch]] at line 11
target = "a"
`)
}

func TestLoadSecrets(t *testing.T) {
	dir := t.TempDir()
	creds := t.TempDir()
	writeFile(t, dir, "ok.pass", "secret", 0o600)
	writeFile(t, dir, "open.key", "key", 0o604)
	writeFile(t, dir, "empty.pass", "", 0o600)
	writeFile(t, creds, "acme.pass", "secret", 0o400)
	writeFile(t, creds, "nats.creds", "creds", 0o440)
	if err := os.Mkdir(filepath.Join(dir, "folder"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	cfg := loadCase(t, dir, `
[nats]
credentials_file = "credential:nats.creds" #! nats.credentials_file: `+creds+`/nats.creds is open to group or others (mode 0440)

[[target]]
name = "a"
host = "h"
user = "u"
password_file = "credential:acme.pass"
identity_file = "open.key"       #! target.identity_file: $DIR/open.key is open to group or others (mode 0604); run chmod 600 $DIR/open.key
passphrase_file = "missing.pass" #! target.passphrase_file: $DIR/missing.pass does not exist

[[target]]
name = "b"
host = "h"
user = "u"
password_file = "folder"         #! target.password_file: $DIR/folder is not a regular file
identity_file = "empty.pass"     #! target.identity_file: $DIR/empty.pass is empty
passphrase_file = "ok.pass"

[[target]]
name = "c"
host = "h"
user = "u"
password_file = "credential:missing" #! target.password_file: credential missing is not in $CREDENTIALS_DIRECTORY (`+creds+`): add LoadCredential=missing:/path/to/file to the unit
`)
	if cfg != nil {
		t.Error("Load returned a config with problems")
	}
}

// Outside systemd (dropship check or status from a shell) a credential
// cannot be looked at: only its name is checked, and reading it says why it
// cannot be read.
func TestLoadCredentialWithoutSystemd(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	os.Unsetenv("CREDENTIALS_DIRECTORY")
	loadCase(t, dir, `
[[target]]
name = "a"
host = "h"
user = "u"
password_file = "credential:acme.pass"
`)
	loadCase(t, dir, `
[[target]]
name = "a"
host = "h"
user = "u"
password_file = "credential:../x" #! target.password_file: must be a plain file name
`)
	if _, err := ReadSecret("credential:acme.pass"); err == nil || !strings.Contains(err.Error(), "$CREDENTIALS_DIRECTORY, which is not set") {
		t.Errorf("ReadSecret without CREDENTIALS_DIRECTORY: %v", err)
	}
}

func TestLoadMakesPathsAbsolute(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "conf/keys/id", "key", 0o600)
	if err := os.MkdirAll(filepath.Join(dir, "conf", "drop"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "conf/agent.toml", `
[agent]
state_dir = "state"
[[target]]
name = "a"
host = "h"
user = "u"
identity_file = "keys/id"
[[watch]]
path = "drop"
target = "a"
failed_dir = "../failed"
`, 0o644)
	t.Chdir(dir)
	cfg, err := Load(filepath.Join("conf", "agent.toml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "conf")
	for _, c := range []struct{ name, got, want string }{
		{"File", cfg.File, filepath.Join(conf, "agent.toml")},
		{"state_dir", cfg.Agent.StateDir, filepath.Join(conf, "state")},
		{"identity_file", cfg.Targets[0].IdentityFile, filepath.Join(conf, "keys", "id")},
		{"known_hosts_file", cfg.Targets[0].KnownHostsFile, filepath.Join(conf, "state", "known_hosts")},
		{"path", cfg.Watches[0].Path, filepath.Join(conf, "drop")},
		{"archive_dir", cfg.Watches[0].ArchiveDir, filepath.Join(conf, "drop", ".dropship-sent")},
		{"failed_dir", cfg.Watches[0].FailedDir, filepath.Join(dir, "failed")},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestLoadReportsRelativeFileName(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "agent.toml", "[agent]\nlog_level = \"loud\"\n", 0o644)
	t.Chdir(dir)
	_, err := Load("agent.toml")
	if got, want := err.Error(), `agent.toml:2: agent.log_level: "loud" is not one of debug, info, warn, error`; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "agent.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error = %v, want one that is fs.ErrNotExist", err)
	}
	var probs Problems
	if errors.As(err, &probs) {
		t.Error("a missing file is reported as Problems")
	}
}
