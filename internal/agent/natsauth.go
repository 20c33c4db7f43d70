package agent

import (
	"fmt"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/config"
)

// NATSAuth is how a connection to the NATS server of cfg logs in: the
// [nats] keys with their credential:NAME references resolved, and the
// password or token read from its secret file (checked as every secret
// file is). Its errors name the key and never hold a secret.
func NATSAuth(cfg *config.Config) (events.Auth, error) {
	n := cfg.NATS
	var a events.Auth
	path := func(key, ref string, dst *string) error {
		if ref == "" {
			return nil
		}
		p, err := config.SecretPath(ref)
		if err != nil {
			return fmt.Errorf("nats.%s: %w", key, err)
		}
		*dst = p
		return nil
	}
	secret := func(key, ref string, dst *string) error {
		if ref == "" {
			return nil
		}
		b, err := config.ReadSecret(ref)
		if err != nil {
			return fmt.Errorf("nats.%s: %w", key, err)
		}
		*dst = string(b)
		clear(b)
		return nil
	}
	a.User = n.User
	for _, err := range []error{
		path("credentials_file", n.CredentialsFile, &a.CredentialsFile),
		path("nkey_seed_file", n.NKeySeedFile, &a.NKeySeedFile),
		path("tls_ca_file", n.TLSCAFile, &a.TLS.CAFile),
		path("tls_cert_file", n.TLSCertFile, &a.TLS.CertFile),
		path("tls_key_file", n.TLSKeyFile, &a.TLS.KeyFile),
		secret("password_file", n.PasswordFile, &a.Password),
		secret("token_file", n.TokenFile, &a.Token),
	} {
		if err != nil {
			return events.Auth{}, err
		}
	}
	a.TLS.ServerName = n.TLSServerName
	return a, nil
}
