package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/dropship/dropship/events"
)

// natsAuth reads the [nats] keys of logging in and of TLS, and reports the
// combinations that make no sense: two ways of logging in, a user without
// a password, half a client certificate, or any of them with the embedded
// server, which takes none.
func (t *table) natsAuth(n *NATS) {
	if t.str("user", &n.User) && n.User != "" {
		t.check("user", checkUser(n.User))
	}
	t.fileRef("password_file", &n.PasswordFile)
	t.fileRef("token_file", &n.TokenFile)
	t.fileRef("nkey_seed_file", &n.NKeySeedFile)
	t.fileRef("tls_ca_file", &n.TLSCAFile)
	t.fileRef("tls_cert_file", &n.TLSCertFile)
	t.fileRef("tls_key_file", &n.TLSKeyFile)
	if t.str("tls_server_name", &n.TLSServerName) && strings.IndexFunc(n.TLSServerName, isSpaceOrControl) >= 0 {
		t.problem("tls_server_name", fmt.Sprintf("%q must be a host name, without whitespace", n.TLSServerName))
	}

	set := func(k string) bool { return t.has(k) && t.raw[k] != "" }
	var ways []string
	for _, k := range []string{"credentials_file", "nkey_seed_file", "user", "token_file"} {
		if set(k) {
			ways = append(ways, k)
		}
	}
	if len(ways) > 1 {
		t.problem(ways[1], fmt.Sprintf("NATS takes one way of logging in: set one of %s, not several", strings.Join(ways, " and ")))
	}
	switch {
	case set("password_file") && !set("user"):
		t.problem("password_file", "is the password of nats.user, which is not set: set user, or remove password_file")
	case set("user") && !set("password_file"):
		t.problem("user", `needs its password: set password_file (a file, or "credential:NAME")`)
	}
	switch {
	case set("tls_cert_file") && !set("tls_key_file"):
		t.problem("tls_cert_file", "needs its private key: set tls_key_file")
	case set("tls_key_file") && !set("tls_cert_file"):
		t.problem("tls_key_file", "is the key of a client certificate: set tls_cert_file too")
	}
	if t.has("url") && t.raw["url"] != "" {
		return
	}
	for _, k := range []string{"user", "password_file", "token_file", "nkey_seed_file", "tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name"} {
		if set(k) {
			t.problem(k, "is for an external NATS server, and nats.url is not set (the agent runs its own embedded server, which takes no login nor TLS): set url, or remove "+k)
		}
	}
}

// checkNATSFiles checks the files of [nats]'s login and TLS: the secrets
// (password, token, nkey seed, client key) as every secret file, the seed
// as an nkey seed, the CA as PEM certificates, and the client certificate
// with its key as a pair that loads.
func (t *table) checkNATSFiles(n *NATS) {
	t.checkSecret("password_file", n.PasswordFile, checkSecret)
	t.checkSecret("token_file", n.TokenFile, checkSecret)
	t.checkSecret("nkey_seed_file", n.NKeySeedFile, checkNKeySeed)
	t.checkSecret("tls_key_file", n.TLSKeyFile, checkSecret)
	if n.TLSCAFile != "" && t.usable(n.TLSCAFile) {
		t.check("tls_ca_file", checkCAFile(n.TLSCAFile))
	}
	if n.TLSCertFile != "" && n.TLSKeyFile != "" && t.usable(n.TLSCertFile) && t.usable(n.TLSKeyFile) {
		t.check("tls_cert_file", checkKeyPair(n.TLSCertFile, n.TLSKeyFile))
	}
}

// usable reports whether the file ref can be looked at here: a
// credential:NAME only where $CREDENTIALS_DIRECTORY is set.
func (t *table) usable(ref string) bool {
	return !strings.HasPrefix(ref, credentialPrefix) || os.Getenv("CREDENTIALS_DIRECTORY") != ""
}

func checkNKeySeed(ref string) error {
	if err := checkSecret(ref); err != nil {
		return err
	}
	p, _ := SecretPath(ref)
	return events.CheckNKeySeed(p)
}

func checkCAFile(ref string) error {
	p, err := SecretPath(ref)
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("cannot read the CA file: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no PEM certificate: give the CA certificate that signed the server's", p)
	}
	return nil
}

// checkKeyPair loads the client certificate with its key, once the key
// passed the checks of a secret file; the error names no key material.
func checkKeyPair(certRef, keyRef string) error {
	if checkSecret(keyRef) != nil {
		return nil // reported at tls_key_file
	}
	cp, err := SecretPath(certRef)
	if err != nil {
		return err
	}
	kp, _ := SecretPath(keyRef)
	if _, err := tls.LoadX509KeyPair(cp, kp); err != nil {
		return fmt.Errorf("the client certificate %s and the key %s do not load as a pair: %v", cp, kp, err)
	}
	return nil
}
