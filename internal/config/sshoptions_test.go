package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/dropship/dropship/transfer"
)

// TestPinnedSSHOptionsRefused: every option transfer pins is refused in
// ssh_options, in any letter case and either spelling, with a message that
// says dropship sets it and which key to use.
func TestPinnedSSHOptionsRefused(t *testing.T) {
	for _, name := range transfer.PinnedOptions() {
		for _, opt := range []string{name + "=x", strings.ToLower(name) + " x", strings.ToUpper(name) + " = x"} {
			err := checkSSHOption(opt)
			want := name + " is set by dropship and cannot be changed in ssh_options: "
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("checkSSHOption(%q) = %v; want %q and advice", opt, err, want)
			}
		}
	}
	for opt, want := range map[string]string{
		"PreferredAuthentications=password": "target.password_file and target.identity_file",
		"PasswordAuthentication no":         "target.password_file",
		"ProxyCommand=nc %h %p":             "ProxyCommand is set by dropship",
		"Port 2222":                         "use target.port",
	} {
		if err := checkSSHOption(opt); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkSSHOption(%q) = %v; want %q", opt, err, want)
		}
	}
	if err := checkSSHOption("Ciphers=aes128-gcm@openssh.com"); err != nil {
		t.Errorf("an option dropship does not set is refused: %v", err)
	}
}

// TestNoDuplicatePinnedList: the options refused here because dropship sets
// them come from transfer.PinnedOptions alone; the package's own list holds
// only the others, and its advice only pinned ones.
func TestNoDuplicatePinnedList(t *testing.T) {
	pinned := transfer.PinnedOptions()
	for _, o := range refusedSSHOptions {
		if slices.ContainsFunc(pinned, func(p string) bool { return strings.EqualFold(p, o.name) }) {
			t.Errorf("%s is listed in refusedSSHOptions and pinned by transfer: keep it in transfer.PinnedOptions only", o.name)
		}
	}
	for name := range pinnedAdvice {
		if !slices.Contains(pinned, name) {
			t.Errorf("pinnedAdvice has %s, which transfer does not pin", name)
		}
	}
	for _, name := range pinned {
		if pinnedAdvice[name] == "" {
			t.Errorf("no advice for the pinned option %s", name)
		}
	}
}
