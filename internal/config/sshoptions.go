package config

import "strings"

// refusedSSHOptions are the OpenSSH options target.ssh_options may not set,
// each with the reason told to the operator. dropship sets some of them
// itself; the others would weaken host-key checking, change what the
// session runs, or expose the agent's keys, environment or network.
var refusedSSHOptions = []struct{ name, why string }{
	{"StrictHostKeyChecking", "use target.host_key instead"},
	{"UserKnownHostsFile", "use target.known_hosts_file instead"},
	{"GlobalKnownHostsFile", hostKeys},
	{"KnownHostsCommand", hostKeys},
	{"HostKeyAlias", hostKeys},
	{"CheckHostIP", hostKeys},
	{"UpdateHostKeys", hostKeys},
	{"VerifyHostKeyDNS", hostKeys},
	{"FingerprintHash", hostKeys},
	{"VisualHostKey", hostKeys},
	{"BatchMode", prompts},
	{"NumberOfPasswordPrompts", prompts},
	{"ControlMaster", sharing},
	{"ControlPath", sharing},
	{"ControlPersist", sharing},
	{"LogLevel", "dropship reads OpenSSH's messages and sets the level it needs; agent.log_level sets dropship's own"},
	{"Port", "use target.port instead"},
	{"User", "use target.user instead"},
	{"Hostname", "use target.host instead"},
	{"IdentityFile", "use target.identity_file instead"},
	{"IdentitiesOnly", "dropship sets it with target.identity_file"},
	{"ConnectTimeout", "use target.connect_timeout instead"},
	{"ServerAliveInterval", liveness},
	{"ServerAliveCountMax", liveness},
	{"LocalCommand", session},
	{"PermitLocalCommand", session},
	{"RemoteCommand", session},
	{"RequestTTY", session},
	{"SessionType", session},
	{"StdinNull", session},
	{"ForkAfterAuthentication", session},
	{"ForwardAgent", forward},
	{"ForwardX11", forward},
	{"ForwardX11Trusted", forward},
	{"LocalForward", forward},
	{"RemoteForward", forward},
	{"DynamicForward", forward},
	{"SendEnv", "it would send the agent's environment to the remote"},
	{"SetEnv", "it would send the agent's environment to the remote"},
	{"AddKeysToAgent", "it would add keys to an ssh-agent"},
	{"EscapeChar", "dropship disables escape characters so that nothing it sends can trigger one"},
	{"Include", block},
	{"Match", block},
	{"Host", block},
}

const (
	hostKeys = "dropship checks host keys itself; use target.host_key and target.known_hosts_file"
	prompts  = "dropship answers OpenSSH's prompts itself; use target.password_file or target.passphrase_file"
	sharing  = "dropship manages connection sharing itself; use target.connections"
	liveness = "dropship detects stalled transfers itself; use target.stall_timeout"
	session  = "it would change what the ssh session runs"
	forward  = "it would open the agent's keys, display or network to the remote"
	block    = "it starts an ssh_config block and is no option; put it in the ssh_config of the user dropship runs as"
)

// RefusedSSHOptions returns the names of the OpenSSH options that
// target.ssh_options may not set, in any letter case: dropship sets them
// itself, or they would weaken host-key checking, change what the session
// runs, or expose the agent's keys, environment or network.
func RefusedSSHOptions() []string {
	names := make([]string, len(refusedSSHOptions))
	for i, o := range refusedSSHOptions {
		names[i] = o.name
	}
	return names
}

// refusedSSHOption reports whether the option key is refused, with its
// canonical name and the reason.
func refusedSSHOption(key string) (name, why string, refused bool) {
	for _, o := range refusedSSHOptions {
		if strings.EqualFold(o.name, key) {
			return o.name, o.why, true
		}
	}
	return "", "", false
}
