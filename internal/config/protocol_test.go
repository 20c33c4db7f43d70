package config

import (
	"strings"
	"testing"
)

// protocol takes auto and sftp; the legacy scp protocol is refused with a
// message that says what to use instead, at the key's line.
func TestProtocol(t *testing.T) {
	base := "[[target]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\n"
	for _, p := range []string{"auto", "sftp"} {
		cfg, err := Parse(strings.NewReader(base+"protocol = \""+p+"\"\n"), "agent.toml")
		if err != nil {
			t.Fatalf("protocol = %q: %v", p, err)
		}
		if got := cfg.Targets[0].Protocol; got != p {
			t.Errorf("protocol = %q parsed as %q", p, got)
		}
	}
	_, err := Parse(strings.NewReader(base+"protocol = \"scp\"\n"), "agent.toml")
	if err == nil || !strings.Contains(err.Error(), "agent.toml:5: target[0].protocol") && !strings.Contains(err.Error(), "agent.toml:5:") || !strings.Contains(err.Error(), `use "sftp"`) {
		t.Errorf("protocol = \"scp\": %v", err)
	}
	_, err = Parse(strings.NewReader(base+"protocol = \"ftp\"\n"), "agent.toml")
	if err == nil {
		t.Error("protocol = \"ftp\" accepted")
	}
}
