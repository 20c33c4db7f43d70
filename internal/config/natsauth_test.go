package config

import (
	"os"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/dropship/dropship/internal/testpki"
)

func TestParseNATSAuth(t *testing.T) {
	for _, tc := range []struct{ name, src string }{
		{"token and user", `
[nats]
url = "nats://n1:4222"
user = "agent"
password_file = "/etc/dropship/nats.pass"
token_file = "/etc/dropship/nats.token" #! nats.token_file: NATS takes one way of logging in: set one of user and token_file, not several
`},
		{"creds and nkey", `
[nats]
url = "nats://n1:4222"
credentials_file = "/etc/dropship/a.creds"
nkey_seed_file = "/etc/dropship/a.nk" #! nats.nkey_seed_file: set one of credentials_file and nkey_seed_file
`},
		{"user without password", `
[nats]
url = "nats://n1:4222"
user = "agent" #! nats.user: needs its password: set password_file
`},
		{"password without user", `
[nats]
url = "nats://n1:4222"
password_file = "credential:nats.pass" #! nats.password_file: is the password of nats.user, which is not set
`},
		{"half a client certificate", `
[nats]
url = "tls://n1:4222"
tls_key_file = "/etc/dropship/nats.key" #! nats.tls_key_file: is the key of a client certificate: set tls_cert_file too
`},
		{"certificate without key", `
[nats]
url = "tls://n1:4222"
tls_cert_file = "/etc/dropship/nats.pem" #! nats.tls_cert_file: needs its private key: set tls_key_file
`},
		{"auth with the embedded server", `
[nats]
token_file = "/etc/dropship/nats.token" #! nats.token_file: is for an external NATS server, and nats.url is not set
tls_ca_file = "/etc/dropship/ca.pem" #! nats.tls_ca_file: is for an external NATS server
`},
		{"server name with a space", `
[nats]
url = "tls://n1:4222"
tls_server_name = "a b" #! nats.tls_server_name: must be a host name
`},
		{"bad credential name", `
[nats]
url = "tls://n1:4222"
user = "agent"
password_file = "credential:a/b" #! nats.password_file: must be a plain file name
`},
	} {
		t.Run(tc.name, func(t *testing.T) { parseCase(t, tc.src) })
	}
	for _, tc := range []struct{ name, src string }{
		{"user and password", `[nats]
url = "nats://n1:4222"
user = "agent"
password_file = "credential:nats.pass"`},
		{"token, TLS", `[nats]
url = "tls://n1:4222,tls://n2:4222"
token_file = "/etc/dropship/nats.token"
tls_ca_file = "/etc/dropship/ca.pem"
tls_cert_file = "/etc/dropship/agent.pem"
tls_key_file = "credential:agent.key"
tls_server_name = "nats.internal"`},
		{"nkey", `[nats]
url = "nats://n1:4222"
nkey_seed_file = "/etc/dropship/agent.nk"`},
		{"URLs without a scheme", `[nats]
url = "127.0.0.1:4222, n2:4222,localhost"`},
	} {
		t.Run(tc.name, func(t *testing.T) { parseCase(t, tc.src) })
	}
}

func TestLoadNATSAuthFiles(t *testing.T) {
	pki := testpki.New(t)
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	dir := t.TempDir()
	writeFile(t, dir, "open.pass", "pw", 0o644)
	writeFile(t, dir, "agent.nk", string(seed), 0o600)
	writeFile(t, dir, "bad.nk", "not a seed", 0o600)
	key, _ := os.ReadFile(pki.ClientKey)
	writeFile(t, dir, "open.key", string(key), 0o640)
	writeFile(t, dir, "server.key", mustRead(t, pki.ServerKey), 0o600)
	cfg := loadCase(t, dir, `
[nats]
url = "tls://127.0.0.1:4222"
user = "agent"
password_file = "open.pass" #! nats.password_file: $DIR/open.pass is open to group or others (mode 0644)
tls_ca_file = "`+pki.ClientKey+`" #! nats.tls_ca_file: holds no PEM certificate
tls_cert_file = "`+pki.ClientCert+`"
tls_key_file = "open.key" #! nats.tls_key_file: $DIR/open.key is open to group or others (mode 0640)
`)
	_ = cfg
	loadCase(t, dir, `
[nats]
url = "tls://127.0.0.1:4222"
nkey_seed_file = "bad.nk" #! nats.nkey_seed_file: holds no nkey seed
tls_cert_file = "`+pki.ClientCert+`" #! nats.tls_cert_file: do not load as a pair: tls: private key does not match public key
tls_key_file = "server.key"
`)
	cfg = loadCase(t, dir, `
[nats]
url = "tls://127.0.0.1:4222"
nkey_seed_file = "agent.nk"
tls_ca_file = "`+pki.CA+`"
tls_cert_file = "`+pki.ClientCert+`"
tls_key_file = "`+pki.ClientKey+`"
tls_server_name = "`+testpki.ServerName+`"
`)
	if cfg.NATS.NKeySeedFile != dir+"/agent.nk" || cfg.NATS.TLSCAFile != pki.CA || cfg.NATS.TLSServerName != testpki.ServerName {
		t.Errorf("NATS = %+v", cfg.NATS)
	}
	loadCase(t, dir, `
[nats]
url = "tls://127.0.0.1:4222"
token_file = "missing.token" #! nats.token_file: $DIR/missing.token does not exist
`)
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
