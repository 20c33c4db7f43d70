package config

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want string
	}{
		{"no newline", "hunter2", "hunter2"},
		{"newline", "hunter2\n", "hunter2"},
		{"crlf", "hunter2\r\n", "hunter2"},
		{"only one newline is stripped", "hunter2\n\n", "hunter2\n"},
		{"inner newlines are kept", "line1\nline2\n", "line1\nline2"},
		{"spaces are kept", " hunter2 \n", " hunter2 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.name, tc.content, 0o600)
			got, err := ReadSecret(p)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("ReadSecret = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReadSecretRefusals(t *testing.T) {
	dir := t.TempDir()
	const secret = "hunter2-do-not-print"
	for _, tc := range []struct {
		name string
		mode fs.FileMode
		want string
	}{
		{"group readable", 0o640, "(mode 0640); run chmod 600 "},
		{"world readable", 0o604, "(mode 0604); run chmod 600 "},
		{"group writable", 0o620, "(mode 0620)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.name, secret+"\n", tc.mode)
			got, err := ReadSecret(p)
			if err == nil {
				t.Fatalf("ReadSecret of a file with mode %04o succeeded", tc.mode)
			}
			if got != nil {
				t.Error("ReadSecret returned content with its error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not contain %q and the file name", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error contains the secret: %q", err)
			}
		})
	}

	t.Run("too large", func(t *testing.T) {
		p := writeFile(t, dir, "large", strings.Repeat(secret, maxSecretSize/len(secret)+1), 0o600)
		_, err := ReadSecret(p)
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		_, err := ReadSecret(filepath.Join(dir, "nope"))
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("folder", func(t *testing.T) {
		_, err := ReadSecret(dir)
		if err == nil || !strings.Contains(err.Error(), "is not a regular file") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("empty reference", func(t *testing.T) {
		if _, err := ReadSecret(""); err == nil {
			t.Error("ReadSecret(\"\") succeeded")
		}
	})
}

func TestReadSecretCredential(t *testing.T) {
	creds := t.TempDir()
	writeFile(t, creds, "acme.pass", "s3cret\n", 0o400)
	t.Setenv("CREDENTIALS_DIRECTORY", creds)

	got, err := ReadSecret("credential:acme.pass")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "s3cret" {
		t.Errorf("ReadSecret = %q, want %q", got, "s3cret")
	}
	if p, err := SecretPath("credential:acme.pass"); err != nil || p != filepath.Join(creds, "acme.pass") {
		t.Errorf("SecretPath = %q, %v", p, err)
	}
	if p, err := SecretPath("/etc/dropship/acme.pass"); err != nil || p != "/etc/dropship/acme.pass" {
		t.Errorf("SecretPath of a path = %q, %v", p, err)
	}

	for _, ref := range []string{"credential:", "credential:../acme.pass", "credential:sub/acme.pass", "credential:.."} {
		if _, err := ReadSecret(ref); err == nil {
			t.Errorf("ReadSecret(%q) succeeded", ref)
		}
	}

	t.Setenv("CREDENTIALS_DIRECTORY", "")
	_, err = ReadSecret("credential:acme.pass")
	if err == nil || !strings.Contains(err.Error(), "$CREDENTIALS_DIRECTORY, which is not set") || !strings.Contains(err.Error(), "LoadCredential=acme.pass:") {
		t.Errorf("error without CREDENTIALS_DIRECTORY = %v", err)
	}
	if errors.Is(err, fs.ErrNotExist) {
		t.Error("unset CREDENTIALS_DIRECTORY reported as a missing file")
	}
}
