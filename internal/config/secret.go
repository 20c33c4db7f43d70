package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// credentialPrefix marks a secret reference to a systemd credential:
// "credential:NAME" is the file NAME in $CREDENTIALS_DIRECTORY, as set up
// by LoadCredential= or SetCredential= in the unit.
const credentialPrefix = "credential:"

// maxSecretSize bounds what ReadSecret reads: passwords, passphrases, keys
// and NATS credentials are all far smaller.
const maxSecretSize = 64 << 10

// SecretPath returns the file a secret reference stands for: ref itself, or
// $CREDENTIALS_DIRECTORY/NAME for "credential:NAME". It does not look at the
// file.
func SecretPath(ref string) (string, error) {
	name, ok := strings.CutPrefix(ref, credentialPrefix)
	if !ok {
		if ref == "" {
			return "", errors.New("empty secret file reference")
		}
		return ref, nil
	}
	if err := checkCredentialName(name); err != nil {
		return "", err
	}
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return "", fmt.Errorf("%s needs $CREDENTIALS_DIRECTORY, which is not set: run dropship from a systemd unit with LoadCredential=%s:/path/to/file, or give a file path", ref, name)
	}
	return filepath.Join(dir, name), nil
}

// ReadSecret reads the secret that ref (a path or credential:NAME) refers
// to, after checking that it is a regular file not open to group or others.
// It strips one trailing "\n" or "\r\n", as editors and `echo` leave one.
// Its errors never contain the file's content.
func ReadSecret(ref string) ([]byte, error) {
	p, err := SecretPath(ref)
	if err != nil {
		return nil, err
	}
	fi, err := statSecret(p)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	defer f.Close()
	// The file checked must be the file read.
	if ofi, err := f.Stat(); err != nil || !os.SameFile(fi, ofi) {
		return nil, fmt.Errorf("read secret %s: the file changed while it was opened; try again", p)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return nil, fmt.Errorf("read secret: %w", err)
	}
	if len(data) > maxSecretSize {
		clear(data)
		return nil, fmt.Errorf("secret file %s is larger than %d KiB: is it the right file?", p, maxSecretSize>>10)
	}
	if b, ok := bytes.CutSuffix(data, []byte("\r\n")); ok {
		return b, nil
	}
	if b, ok := bytes.CutSuffix(data, []byte("\n")); ok {
		return b, nil
	}
	return data, nil
}

// checkSecret checks the file a secret reference refers to without reading
// it.
func checkSecret(ref string) error {
	p, err := SecretPath(ref)
	if err != nil {
		return err
	}
	_, err = statSecret(p)
	return err
}

// statSecret checks that p is a non-empty regular file that only its owner
// may read or write.
func statSecret(p string) (fs.FileInfo, error) {
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("secret file %s does not exist", p)
	case err != nil:
		return nil, fmt.Errorf("secret file: %w", err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("secret file %s is not a regular file", p)
	case fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("secret file %s is open to group or others (mode %04o); run chmod 600 %s", p, fi.Mode().Perm(), p)
	case fi.Size() == 0:
		return nil, fmt.Errorf("secret file %s is empty", p)
	}
	return fi, nil
}
