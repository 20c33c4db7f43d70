package transfer

// pinnedOptions are the OpenSSH options dropship sets on the command line of
// every client it runs (commonOptions, masterArgs, sessionArgs, probeArgs,
// sftpArgs), in canonical case. Port is set with -p.
var pinnedOptions = []string{
	"User",
	"Port",
	"StrictHostKeyChecking",
	"UserKnownHostsFile",
	"GlobalKnownHostsFile",
	"KnownHostsCommand",
	"CheckHostIP",
	"UpdateHostKeys",
	"VerifyHostKeyDNS",
	"FingerprintHash",
	"VisualHostKey",
	"BatchMode",
	"NumberOfPasswordPrompts",
	"ConnectTimeout",
	"ServerAliveInterval",
	"ServerAliveCountMax",
	"LogLevel",
	"ForwardAgent",
	"ForwardX11",
	"ClearAllForwardings",
	"PermitLocalCommand",
	"RequestTTY",
	"EscapeChar",
	"ControlPersist",
	"ControlMaster",
	"ControlPath",
	"IdentitiesOnly",
	"IdentityFile",
	"PasswordAuthentication",
	"KbdInteractiveAuthentication",
	"PreferredAuthentications",
	"ProxyCommand",
}

// PinnedOptions returns the names, in OpenSSH's canonical case, of the ssh
// options dropship sets itself on the command line of the clients it runs.
// OpenSSH takes the first value it sees, so a target's SSHOptions (which come
// after them) cannot change these: the configuration refuses them, from this
// one list, instead of ignoring them silently. Every option the argv
// builders emit is in it (pinned_test.go checks that); the caller gets its
// own copy.
func PinnedOptions() []string {
	return append([]string(nil), pinnedOptions...)
}
