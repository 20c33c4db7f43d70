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
		p.nats.checkSecret("credentials_file", cfg.NATS.CredentialsFile)
	}
	for i, t := range p.targets {
		tg := &cfg.Targets[i]
		t.checkSecret("password_file", tg.PasswordFile)
		t.checkSecret("identity_file", tg.IdentityFile)
		t.checkSecret("passphrase_file", tg.PassphraseFile)
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
	// Overlaps that only symlinks reveal; parse reported the others.
	for i := range cfg.Watches {
		for j := range i {
			w, v := &cfg.Watches[i], &cfg.Watches[j]
			if real[i] == "" || real[j] == "" || overlap(w.Path, v.Path, v.Line) != "" {
				continue
			}
			if msg := overlap(real[i], real[j], v.Line); msg != "" {
				p.watches[i].problem("path", fmt.Sprintf("%s, once symlinks are resolved: %s", w.Path, msg))
			}
		}
	}
}

// checkSecret reports a problem with the secret file ref of key k, if any.
// A credential:NAME reference can only be looked at where systemd provides
// $CREDENTIALS_DIRECTORY (the service itself): elsewhere, such as
// `dropship check` or `dropship status` run from a shell, only its name is
// checked (by Parse), and the agent reports a missing credential when it
// reads it.
func (t *table) checkSecret(k, ref string) {
	if ref == "" {
		return
	}
	if strings.HasPrefix(ref, credentialPrefix) && os.Getenv("CREDENTIALS_DIRECTORY") == "" {
		return
	}
	t.check(k, checkSecret(ref))
}
