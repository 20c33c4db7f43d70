package transfer

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPinnedOptions: every -o option any argv builder emits, for targets of
// every shape, is in PinnedOptions, which the configuration refuses in
// ssh_options. A new pinned option must be added there.
func TestPinnedOptions(t *testing.T) {
	pinned := PinnedOptions()
	targets := map[string]Target{
		"password, strict": {Name: "a", Host: "h", Port: 22, User: "u", Password: NewSecret([]byte("pw")), HostKey: HostKeyStrict, KnownHosts: []string{"/k"}},
		"key with passphrase, pinned": {Name: "a", Host: "::1", Port: 2222, User: "u", Identity: "/id key", Passphrase: NewSecret([]byte("pp")),
			HostKey: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", StallTimeout: 2 * time.Second},
		"agent only, accept-new":   {Name: "a", Host: "h", Port: 22, User: "u", HostKey: HostKeyAcceptNew, ConnectTimeout: time.Second},
		"key and password":         {Name: "a", Host: "h", Port: 22, User: "u", Identity: "/id", Password: NewSecret([]byte("pw")), HostKey: HostKeyStrict},
		"no known_hosts, strict":   {Name: "a", Host: "h", Port: 22, User: "u", HostKey: HostKeyStrict},
		"operator options ignored": {Name: "a", Host: "h", Port: 22, User: "u", HostKey: HostKeyStrict, SSHOptions: []string{"Ciphers=aes128-gcm@openssh.com"}},
	}
	seen := map[string]bool{}
	for name, tg := range targets {
		argvs := map[string][]string{
			"commonOptions": commonOptions(&tg, "/run/ctl"),
			"no socket":     commonOptions(&tg, ""),
			"masterArgs":    masterArgs(&tg, "/run/ctl"),
			"sessionArgs":   sessionArgs(&tg, "/run/ctl"),
			"probeArgs":     probeArgs(&tg),
			"sftpArgs":      sftpArgs(&tg, "/run/ctl"),
		}
		for builder, argv := range argvs {
			for i := 0; i+1 < len(argv); i++ {
				if argv[i] != "-o" {
					continue
				}
				opt := argv[i+1]
				if slices.Contains(tg.SSHOptions, opt) {
					continue
				}
				key, _, _ := strings.Cut(opt, "=")
				if !slices.Contains(pinned, key) {
					t.Errorf("%s, %s: -o %s is not in PinnedOptions", name, builder, opt)
				}
				seen[key] = true
			}
			if slices.Contains(argv, "-p") || slices.Contains(argv, "-P") {
				seen["Port"] = true
			}
		}
	}
	for _, k := range pinned {
		if !seen[k] {
			t.Errorf("PinnedOptions lists %s, which no argv builder sets", k)
		}
	}
	pinned[0] = "changed"
	if PinnedOptions()[0] == "changed" {
		t.Error("PinnedOptions returns the package's own slice")
	}
}
