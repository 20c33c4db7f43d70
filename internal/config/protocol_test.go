package config

import (
	"strings"
	"testing"
)

// protocol takes auto, sftp and scp (the legacy protocol, for servers without
// an SFTP subsystem), defaults to auto, and refuses anything else at the
// key's line.
func TestProtocol(t *testing.T) {
	base := "[[target]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\n"
	for _, p := range []string{"auto", "sftp", "scp"} {
		cfg, err := Parse(strings.NewReader(base+"protocol = \""+p+"\"\n"), "agent.toml")
		if err != nil {
			t.Fatalf("protocol = %q: %v", p, err)
		}
		if got := cfg.Targets[0].Protocol; got != p {
			t.Errorf("protocol = %q parsed as %q", p, got)
		}
	}
	cfg, err := Parse(strings.NewReader(base), "agent.toml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Targets[0].Protocol; got != "auto" {
		t.Errorf("default protocol %q, want auto", got)
	}
	for _, bad := range []string{"ftp", "SCP", "scp -O", ""} {
		_, err = Parse(strings.NewReader(base+"protocol = \""+bad+"\"\n"), "agent.toml")
		if err == nil || !strings.Contains(err.Error(), "agent.toml:5:") || !strings.Contains(err.Error(), "protocol") {
			t.Errorf("protocol = %q: %v", bad, err)
		}
	}
}
