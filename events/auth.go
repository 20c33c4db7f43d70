package events

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Auth is how a connection to NATS authenticates, and its TLS, as a NATS
// user configures them: at most one of CredentialsFile, NKeySeedFile, User
// (with Password) and Token. Files are paths; the caller resolves
// credential:NAME and reads the password or token from its secret file. The
// zero Auth is an anonymous connection (TLS only when the URL says tls://).
type Auth struct {
	// CredentialsFile is a NATS .creds file (user JWT and seed), read by
	// path on every (re)connect.
	CredentialsFile string
	// NKeySeedFile holds an nkey user seed ("SU…"), read on every
	// (re)connect to sign the server's nonce.
	NKeySeedFile string
	// User and Password log in as a user of the server's authorization.
	User, Password string
	// Token is an authorization token.
	Token string
	// TLS, when any of it is set, makes the connection use TLS.
	TLS TLSFiles
}

// TLSFiles is a connection's TLS: the CA that signed the server's
// certificate (empty: the system's roots), a client certificate and key
// (both or neither), and the name the server's certificate must carry
// (empty: the URL's host).
type TLSFiles struct {
	CAFile, CertFile, KeyFile, ServerName string
}

// Set reports whether any of the TLS settings is given.
func (t TLSFiles) Set() bool {
	return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// Config loads the files into a TLS client configuration. Its errors name
// the files, never a key's bytes.
func (t TLSFiles) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("NATS TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("NATS TLS CA file %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			// The error of LoadX509KeyPair names no key material.
			return nil, fmt.Errorf("NATS TLS client certificate %s with key %s: %w", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case t.CertFile != "" || t.KeyFile != "":
		return nil, errors.New("NATS TLS: a client certificate needs both its certificate file and its key file")
	}
	return cfg, nil
}

// Check reports what is wrong with a: more than one way of logging in, a
// password without a user, or files that cannot be used. It reads the files
// as a connection would, and never puts a secret in its error.
func (a Auth) Check() error {
	var ways []string
	if a.CredentialsFile != "" {
		ways = append(ways, "a .creds file")
	}
	if a.NKeySeedFile != "" {
		ways = append(ways, "an nkey seed")
	}
	if a.User != "" || a.Password != "" {
		ways = append(ways, "a user and password")
	}
	if a.Token != "" {
		ways = append(ways, "a token")
	}
	if len(ways) > 1 {
		return fmt.Errorf("NATS auth: give one way of logging in, not %s", strings.Join(ways, " and "))
	}
	if (a.User == "") != (a.Password == "") {
		return errors.New("NATS auth: a user needs a password, and a password a user")
	}
	if a.CredentialsFile != "" {
		if err := checkCredentials(a.CredentialsFile); err != nil {
			return err
		}
	}
	if a.NKeySeedFile != "" {
		if err := CheckNKeySeed(a.NKeySeedFile); err != nil {
			return err
		}
	}
	if a.TLS.Set() {
		if _, err := a.TLS.Config(); err != nil {
			return err
		}
	}
	return nil
}

// CheckNKeySeed reads an nkey seed file once, as a connection does, and
// checks that it holds a user seed. The error never holds the seed.
func CheckNKeySeed(path string) error {
	contents, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("NATS nkey seed file: %w", err)
	}
	defer clear(contents)
	kp, err := nkeys.ParseDecoratedNKey(contents)
	if err != nil {
		return fmt.Errorf("NATS nkey seed file %s holds no nkey seed (it starts with SU); is it the right file?", path)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return fmt.Errorf("NATS nkey seed file %s holds a seed that is not a user's (a user seed starts with SU)", path)
	}
	return nil
}

// options are the nats.go options for a.
func (a Auth) options() ([]nats.Option, error) {
	if err := a.Check(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch {
	case a.CredentialsFile != "":
		opts = append(opts, nats.UserCredentials(a.CredentialsFile))
	case a.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(a.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("NATS nkey seed file %s: cannot use it", a.NKeySeedFile)
		}
		opts = append(opts, o)
	case a.User != "":
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	case a.Token != "":
		opts = append(opts, nats.Token(a.Token))
	}
	if a.TLS.Set() {
		cfg, err := a.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(cfg))
	}
	return opts, nil
}

// Options returns the nats.go options that authenticate a connection as a
// says, after [Auth.Check], for commands that connect with nats.go
// directly.
func (a Auth) Options() ([]nats.Option, error) { return a.options() }

// permRe finds what a permissions violation is about in the server's error,
// such as: Permissions Violation for Publish to "$JS.API.INFO".
var permRe = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "([^"]+)"`)

// PermissionDenied describes a NATS permissions violation: what the user
// may not do (publish or subscribe) on which subject.
type PermissionDenied struct {
	Op      string // "publish" or "subscribe"
	Subject string
}

func (p *PermissionDenied) Error() string {
	return fmt.Sprintf("NATS permissions violation: the NATS user of this connection may not %s to %s: a permission problem of the NATS user, not of the agent; grant it in the server's authorization (docs/nats-permissions.md lists what dropship needs)",
		p.Op, p.Subject)
}

func (p *PermissionDenied) Unwrap() error { return nats.ErrPermissionViolation }

// AsPermissionDenied returns the permissions violation err reports, or nil
// when it is not one.
func AsPermissionDenied(err error) *PermissionDenied {
	if err == nil {
		return nil
	}
	var pd *PermissionDenied
	if errors.As(err, &pd) {
		return pd
	}
	if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
		return nil
	}
	m := permRe.FindStringSubmatch(err.Error())
	if m == nil {
		return &PermissionDenied{Op: "use", Subject: "a subject"}
	}
	op := "publish"
	if strings.EqualFold(m[1], "subscription") {
		op = "subscribe"
	}
	return &PermissionDenied{Op: op, Subject: m[2]}
}
