package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	fi, err := statSecret(ref, p)
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
	_, err = statSecret(ref, p)
	return err
}

// checkIdentity checks an identity_file reference: a secret file, and a
// private key rather than the public key beside it. Only the first bytes of
// the file are read, and never shown.
func checkIdentity(ref string) error {
	p, err := SecretPath(ref)
	if err != nil {
		return err
	}
	if msg := publicKey(p); msg != "" {
		return errors.New(msg)
	}
	_, err = statSecret(ref, p)
	return err
}

// publicKey explains why the file p looks like a public key, or returns "":
// its name ends in .pub, or it starts as an OpenSSH public key line does and
// holds no "PRIVATE KEY".
func publicKey(p string) string {
	const pre = "identity_file must be the private key; "
	if base, ok := strings.CutSuffix(p, ".pub"); ok {
		return fmt.Sprintf("%s%s looks like a public key: use %s without .pub (%s)", pre, p, p, base)
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0) // a FIFO must not block
	if err != nil {
		return "" // statSecret explains
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	defer clear(head)
	for _, prefix := range []string{"ssh-", "ecdsa-", "sk-"} {
		if bytes.HasPrefix(head, []byte(prefix)) && !bytes.Contains(head, []byte("PRIVATE KEY")) {
			return fmt.Sprintf("%s%s looks like a public key: use the private key file, usually the same name without .pub", pre, p)
		}
	}
	return ""
}

// statSecret checks that p, the file of the secret reference ref, is a
// non-empty regular file that belongs to the user dropship runs as (or, for a
// credential, to root, as systemd leaves it) and that no one else may read or
// write. A symbolic link is followed only to a file that passes the same
// checks.
func statSecret(ref, p string) (fs.FileInfo, error) {
	name, credential := strings.CutPrefix(ref, credentialPrefix)
	lfi, err := os.Lstat(p)
	if err == nil && lfi.Mode()&fs.ModeSymlink != 0 {
		var fi fs.FileInfo
		if fi, err = os.Stat(p); err == nil {
			if err := checkOwner(p, fi, os.Geteuid(), credential); err != nil {
				target, _ := filepath.EvalSymlinks(p)
				return nil, fmt.Errorf("secret file %s is a symbolic link to %s, which %w", p, target, err)
			}
		}
	}
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist) && credential:
		return nil, fmt.Errorf("credential %s is not in $CREDENTIALS_DIRECTORY (%s): add LoadCredential=%s:/path/to/file to the unit (sudo systemctl edit dropship), or correct the name", name, filepath.Dir(p), name)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("secret file %s does not exist", p)
	case err != nil:
		return nil, fmt.Errorf("secret file: %w", err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("secret file %s is not a regular file", p)
	}
	if err := checkOwner(p, fi, os.Geteuid(), credential); err != nil {
		return nil, fmt.Errorf("secret file %s %w", p, err)
	}
	switch {
	case fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("secret file %s is open to group or others (mode %04o); run chmod 600 %s", p, fi.Mode().Perm(), p)
	case fi.Size() == 0:
		return nil, fmt.Errorf("secret file %s is empty", p)
	}
	return fi, nil
}

// checkOwner checks that the file p (whose final target is fi) belongs to
// the user euid, or also to root when credential is set. Its error reads
// after the file's name: "belongs to …; run chown …".
func checkOwner(p string, fi fs.FileInfo, euid int, credential bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil // no owners on this system
	}
	owner := int(st.Uid)
	if owner == euid || credential && owner == 0 {
		return nil
	}
	allowed := userName(euid)
	if credential && euid != 0 {
		allowed += " or root"
	}
	if euid == 0 {
		return fmt.Errorf("belongs to %s, not to root, the user this dropship runs as: run it as the service's user (sudo -u %s dropship ...), or run chown root %s", userName(owner), chownName(owner), p)
	}
	return fmt.Errorf("belongs to %s, not to %s, the user dropship runs as: run chown %s %s (as root)", userName(owner), allowed, chownName(euid), p)
}

// userName names the user uid, or says "uid N" when it has no name.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// chownName is the user uid as chown takes it: its name, or its number.
func chownName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return strconv.Itoa(uid)
}
