package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dropship/dropship/internal/config"
)

func TestNATSAuth(t *testing.T) {
	creds := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	if err := os.WriteFile(filepath.Join(creds, "nats.pw"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NATS.URL = "tls://n1:4222"
	cfg.NATS.User, cfg.NATS.PasswordFile = "agent", "credential:nats.pw"
	cfg.NATS.TLSKeyFile, cfg.NATS.TLSCertFile, cfg.NATS.TLSServerName = "credential:agent.key", "/etc/dropship/agent.pem", "nats.internal"
	a, err := NATSAuth(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a.User != "agent" || a.Password != "s3cret" || a.TLS.KeyFile != filepath.Join(creds, "agent.key") || a.TLS.CertFile != "/etc/dropship/agent.pem" || a.TLS.ServerName != "nats.internal" {
		t.Errorf("NATSAuth = %+v", a)
	}

	cfg.NATS.User, cfg.NATS.PasswordFile, cfg.NATS.TokenFile = "", "", "credential:missing"
	_, err = NATSAuth(cfg)
	if err == nil || !strings.Contains(err.Error(), "nats.token_file") {
		t.Errorf("NATSAuth with a missing token credential: %v, want an error naming nats.token_file", err)
	}
}

func TestReloadNATSLoginNeedsRestart(t *testing.T) {
	running := config.Default()
	next := *running
	next.NATS.User, next.NATS.PasswordFile, next.NATS.TLSCAFile = "agent", "/etc/dropship/nats.pw", "/etc/dropship/ca.pem"
	apply, restart, _ := splitReload(running, &next, true)
	for _, k := range []string{"nats.user", "nats.password_file", "nats.tls_ca_file"} {
		if !slices.Contains(restart, k) {
			t.Errorf("a reload changing %s does not say it needs a restart: %v", k, restart)
		}
	}
	if apply.NATS.User != "" || apply.NATS.TLSCAFile != "" {
		t.Errorf("a reload applied the NATS login: %+v", apply.NATS)
	}
}
