package config

import (
	"slices"
	"strings"

	"github.com/dropship/dropship/transfer"
)

// pinnedAdvice says, for the options dropship sets itself
// (transfer.PinnedOptions), which configuration key controls each instead.
// It is advice only: what is refused comes from transfer.PinnedOptions.
var pinnedAdvice = map[string]string{
	"User":                         "use target.user",
	"Port":                         "use target.port",
	"StrictHostKeyChecking":        "use target.host_key",
	"UserKnownHostsFile":           "use target.known_hosts_file",
	"GlobalKnownHostsFile":         hostKeys,
	"KnownHostsCommand":            hostKeys,
	"CheckHostIP":                  hostKeys,
	"UpdateHostKeys":               hostKeys,
	"VerifyHostKeyDNS":             hostKeys,
	"FingerprintHash":              hostKeys,
	"VisualHostKey":                hostKeys,
	"BatchMode":                    prompts,
	"NumberOfPasswordPrompts":      prompts,
	"PasswordAuthentication":       logins,
	"KbdInteractiveAuthentication": logins,
	"PreferredAuthentications":     logins,
	"IdentityFile":                 "use target.identity_file",
	"IdentitiesOnly":               "use target.identity_file",
	"ControlMaster":                sharing,
	"ControlPath":                  sharing,
	"ControlPersist":               sharing,
	"ProxyCommand":                 sharing,
	"ConnectTimeout":               "use target.connect_timeout",
	"ServerAliveInterval":          liveness,
	"ServerAliveCountMax":          liveness,
	"LogLevel":                     "dropship reads OpenSSH's messages at the level it needs; agent.log_level sets dropship's own",
	"ForwardAgent":                 forward,
	"ForwardX11":                   forward,
	"ClearAllForwardings":          forward,
	"PermitLocalCommand":           session,
	"RequestTTY":                   session,
	"EscapeChar":                   "dropship disables escape characters so that nothing it sends can trigger one",
}

// refusedSSHOptions are the options target.ssh_options may not set although
// dropship does not set them, each with the reason told to the operator:
// they would weaken host-key checking, change what the session runs, or
// expose the agent's keys, environment or network. The options dropship sets
// itself are refused too, from transfer.PinnedOptions; none is listed here.
var refusedSSHOptions = []struct{ name, why string }{
	{"HostKeyAlias", "it would check the server against another host's keys; " + hostKeys},
	{"Hostname", "use target.host"},
	{"LocalCommand", session},
	{"RemoteCommand", session},
	{"SessionType", session},
	{"StdinNull", session},
	{"ForkAfterAuthentication", session},
	{"ForwardX11Trusted", forward},
	{"LocalForward", forward},
	{"RemoteForward", forward},
	{"DynamicForward", forward},
	{"SendEnv", "it would send the agent's environment to the remote"},
	{"SetEnv", "it would send the agent's environment to the remote"},
	{"AddKeysToAgent", "it would add keys to an ssh-agent"},
	{"Include", block},
	{"Match", block},
	{"Host", block},
}

const (
	hostKeys = "dropship checks host keys itself; use target.host_key and target.known_hosts_file"
	prompts  = "dropship answers OpenSSH's prompts itself; use target.password_file or target.passphrase_file"
	logins   = "dropship chooses the login methods from target.password_file and target.identity_file; set those"
	sharing  = "dropship manages the connection and its sharing itself; use target.connections"
	liveness = "dropship detects stalled transfers itself; use target.stall_timeout"
	session  = "it would change what the ssh session runs"
	forward  = "it would open the agent's keys, display or network to the remote"
	block    = "it starts an ssh_config block and is no option; put it in the ssh_config of the user dropship runs as"
)

// RefusedSSHOptions returns the names of the OpenSSH options that
// target.ssh_options may not set, in any letter case: those dropship sets
// itself (transfer.PinnedOptions), and those that would weaken host-key
// checking, change what the session runs, or expose the agent's keys,
// environment or network.
func RefusedSSHOptions() []string {
	names := transfer.PinnedOptions()
	for _, o := range refusedSSHOptions {
		names = append(names, o.name)
	}
	return names
}

// refusedSSHOption explains why the option key may not be set, with its
// canonical name, or returns "".
func refusedSSHOption(key string) string {
	if i := slices.IndexFunc(transfer.PinnedOptions(), func(n string) bool { return strings.EqualFold(n, key) }); i >= 0 {
		name := transfer.PinnedOptions()[i]
		msg := name + " is set by dropship and cannot be changed in ssh_options"
		if why := pinnedAdvice[name]; why != "" {
			msg += ": " + why
		}
		return msg
	}
	for _, o := range refusedSSHOptions {
		if strings.EqualFold(o.name, key) {
			return o.name + " is refused: " + o.why
		}
	}
	return ""
}
