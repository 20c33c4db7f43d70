package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// checkFiles runs Load's checks of the file system on whatever parse could
// read, adding its problems to the others.
func (p *parsed) checkFiles() {
	cfg := p.cfg
	if p.nats != nil {
		p.nats.checkSecret("credentials_file", cfg.NATS.CredentialsFile, checkSecret)
		p.nats.checkNATSFiles(&cfg.NATS)
	}
	for i, t := range p.targets {
		tg := &cfg.Targets[i]
		t.checkSecret("password_file", tg.PasswordFile, checkSecret)
		t.checkSecret("identity_file", tg.IdentityFile, checkIdentity)
		t.checkSecret("passphrase_file", tg.PassphraseFile, checkSecret)
	}
	for i, t := range p.sources {
		c := &cfg.Sources[i].Conn
		t.checkSecret("password_file", c.PasswordFile, checkSecret)
		t.checkSecret("identity_file", c.IdentityFile, checkIdentity)
		t.checkSecret("passphrase_file", c.PassphraseFile, checkSecret)
	}

	real := make([]string, len(cfg.Watches)) // watched folders, symlinks resolved
	for i, t := range p.watches {
		w := &cfg.Watches[i]
		if w.Path == "" {
			continue
		}
		fi, err := os.Stat(w.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			t.problem("path", fmt.Sprintf("folder %s does not exist; create it or correct path", w.Path))
		case err != nil:
			t.problem("path", fmt.Sprintf("cannot use the folder: %v", err))
		case !fi.IsDir():
			t.problem("path", fmt.Sprintf("%s is not a folder", w.Path))
		default:
			if r, err := filepath.EvalSymlinks(w.Path); err == nil {
				real[i] = r
			}
		}
		for _, k := range []struct{ key, dir string }{{"archive_dir", w.ArchiveDir}, {"failed_dir", w.FailedDir}} {
			if k.dir == "" {
				continue
			}
			if fi, err := os.Stat(k.dir); err == nil && !fi.IsDir() {
				t.problem(k.key, fmt.Sprintf("%s exists and is not a folder", k.dir))
			}
		}
	}
	// What only symlinks reveal; parse reported the rest.
	paths, lines := make([]string, len(cfg.Watches)), make([]int, len(cfg.Watches))
	for i := range cfg.Watches {
		paths[i], lines[i] = cfg.Watches[i].Path, cfg.Watches[i].Line
	}
	plain := make([]bool, len(cfg.Watches)) // has an overlap without symlinks
	overlapping(paths, lines, func(i int, _ string) { plain[i] = true })
	realState := resolvePath(cfg.Agent.StateDir)
	for i, w := range cfg.Watches {
		if real[i] == "" || realState == "" || watchPlace(w.Path, cfg.Agent.StateDir) != "" {
			continue
		}
		if msg := watchPlace(real[i], realState); msg != "" {
			p.watches[i].problem("path", fmt.Sprintf("%s, once symlinks are resolved: %s", w.Path, msg))
		}
	}
	overlapping(real, lines, func(i int, msg string) {
		if !plain[i] {
			p.watches[i].problem("path", fmt.Sprintf("%s, once symlinks are resolved: %s", cfg.Watches[i].Path, msg))
		}
	})
}

// checkSecret reports a problem with the secret file ref of key k, found
// by check, if any.
// A credential:NAME reference can only be looked at where systemd provides
// $CREDENTIALS_DIRECTORY (the service itself): elsewhere, such as
// `dropship check` or `dropship status` run from a shell, only its name is
// checked (by Parse), and the agent reports a missing credential when it
// reads it.
func (t *table) checkSecret(k, ref string, check func(string) error) {
	if ref == "" {
		return
	}
	if strings.HasPrefix(ref, credentialPrefix) && os.Getenv("CREDENTIALS_DIRECTORY") == "" {
		return
	}
	t.check(k, check(ref))
}
