package transfer

import (
	"strconv"
	"strings"
	"time"
)

// Host-key policies.
const (
	HostKeyStrict    = "strict"     // only keys already in the known_hosts files
	HostKeyAcceptNew = "accept-new" // trust on first use, refuse a changed key
)

// Target is where files go and how to log in. Secrets are values here; the
// caller read them from their files.
type Target struct {
	Name       string
	Host       string
	Port       int
	User       string
	Password   Secret // answered at a password or keyboard-interactive prompt
	Identity   string // private key file, "" for none
	Passphrase Secret // answered at the identity's passphrase prompt
	// HostKey is HostKeyStrict, HostKeyAcceptNew or a pinned "SHA256:…"
	// fingerprint.
	HostKey string
	// KnownHosts are the known_hosts files to check, in order; new keys
	// (accept-new) are written to the first. Ignored for a pinned key, which
	// is checked against the pin alone.
	KnownHosts     []string
	ConnectTimeout time.Duration
	StallTimeout   time.Duration
	SSHOptions     []string // extra ssh -o options, already validated by config
	Connections    int      // parallel transfers
}

// Pinned reports whether the target's host key is pinned to a fingerprint.
func (t *Target) Pinned() bool { return strings.HasPrefix(t.HostKey, "SHA256:") }

// serverAlive is how often a silent server is probed; three missed answers
// end the connection. It is bounded by the stall timeout so a frozen server is
// noticed by ssh itself before the watchdog has to step in.
func (t *Target) serverAlive() time.Duration {
	iv := 15 * time.Second
	if t.StallTimeout > 0 && t.StallTimeout/4 < iv {
		iv = t.StallTimeout / 4
	}
	if iv < time.Second {
		iv = time.Second
	}
	return iv
}

// commonOptions are the -o options every client gets, before the operator's
// ssh_options. OpenSSH takes the first value it sees for an option, so these
// cannot be weakened by ssh_options, ~/.ssh/config or /etc/ssh/ssh_config.
// controlPath is the shared connection's socket ("" for none).
func commonOptions(t *Target, controlPath string) []string {
	strict := "yes"
	knownHosts := quoteList(t.KnownHosts)
	switch {
	case t.Pinned():
		// ssh shows the key and we answer with the pin only if it
		// matches; nothing is trusted from a file.
		strict, knownHosts = "ask", "/dev/null"
	case t.HostKey == HostKeyAcceptNew:
		strict = "accept-new"
	}
	if knownHosts == "" {
		knownHosts = "/dev/null"
	}
	opts := []string{
		"User=" + t.User,
		"StrictHostKeyChecking=" + strict,
		"UserKnownHostsFile=" + knownHosts,
		"GlobalKnownHostsFile=/dev/null",
		"KnownHostsCommand=none",
		"CheckHostIP=no",
		"UpdateHostKeys=no",
		"VerifyHostKeyDNS=no",
		"FingerprintHash=sha256",
		"VisualHostKey=no",
		"BatchMode=no",
		"NumberOfPasswordPrompts=1",
		"ConnectTimeout=" + seconds(t.ConnectTimeout, 15*time.Second),
		"ServerAliveInterval=" + seconds(t.serverAlive(), 15*time.Second),
		"ServerAliveCountMax=3",
		"LogLevel=VERBOSE",
		"ForwardAgent=no",
		"ForwardX11=no",
		"ClearAllForwardings=yes",
		"PermitLocalCommand=no",
		"RequestTTY=no",
		"EscapeChar=none",
		"ControlPersist=no",
	}
	if controlPath != "" {
		opts = append(opts, "ControlMaster=no", "ControlPath="+quoteArg(controlPath))
	} else {
		opts = append(opts, "ControlMaster=no", "ControlPath=none")
	}
	var methods []string
	if t.Identity != "" {
		opts = append(opts, "IdentitiesOnly=yes", "IdentityFile="+quoteArg(t.Identity))
		methods = append(methods, "publickey")
	}
	if !t.Password.IsZero() {
		methods = append(methods, "keyboard-interactive", "password")
	} else {
		opts = append(opts, "PasswordAuthentication=no", "KbdInteractiveAuthentication=no")
	}
	if len(methods) > 0 {
		opts = append(opts, "PreferredAuthentications="+strings.Join(methods, ","))
	}
	out := make([]string, 0, 2*(len(opts)+len(t.SSHOptions)))
	for _, o := range opts {
		out = append(out, "-o", o)
	}
	for _, o := range t.SSHOptions {
		out = append(out, "-o", o)
	}
	return out
}

// masterArgs is the argv (without the program) of the ssh process that holds a
// target's shared connection: no command, no session, its socket at
// controlPath, in the foreground so the agent supervises it.
func masterArgs(t *Target, controlPath string) []string {
	args := []string{"-N", "-T", "-p", strconv.Itoa(t.Port)}
	opts := commonOptions(t, "")
	// The master owns the socket: replace the client settings.
	for i := 0; i+1 < len(opts); i += 2 {
		switch opts[i+1] {
		case "ControlMaster=no":
			opts[i+1] = "ControlMaster=yes"
		case "ControlPath=none":
			opts[i+1] = "ControlPath=" + quoteArg(controlPath)
		}
	}
	args = append(args, opts...)
	return append(args, "--", sshHost(t.Host))
}

// probeTarget is t as an ssh that only fetches the host key sees it: pinned
// to a fingerprint no key has, so ssh always shows the key and asks and the
// answer is always no, and without credentials. The session that runs
// probeArgs must answer prompts for this target, not for t.
func probeTarget(t *Target) Target {
	p := *t
	p.HostKey = "SHA256:probe"
	p.Password = Secret{}
	p.Passphrase = Secret{}
	p.Identity = ""
	return p
}

// probeArgs is the argv of an ssh for probeTarget(t).
func probeArgs(t *Target) []string {
	p := probeTarget(t)
	args := []string{"-N", "-T", "-p", strconv.Itoa(t.Port)}
	args = append(args, commonOptions(&p, "")...)
	return append(args, "--", sshHost(t.Host))
}

// sftpArgs is the argv of an sftp batch session reading its commands from
// stdin. "-o BatchMode=no" comes before "-b" (which implies BatchMode=yes)
// because the first value wins: prompts still reach the pty.
func sftpArgs(t *Target, controlPath string) []string {
	args := []string{"-P", strconv.Itoa(t.Port)}
	args = append(args, commonOptions(t, controlPath)...)
	return append(args, "-b", "-", "--", bracketHost(t.Host))
}

// sshHost is the host as ssh takes it.
func sshHost(h string) string { return h }

// bracketHost is the host as scp and sftp take it: an IPv6 literal in
// brackets, since they split "host:path" at the colon.
func bracketHost(h string) string {
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		return "[" + h + "]"
	}
	return h
}

// seconds formats d as whole seconds for an ssh option, at least 1.
func seconds(d, def time.Duration) string {
	if d <= 0 {
		d = def
	}
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.Itoa(s)
}

// quoteArg quotes a path for an ssh_config value when it needs it: OpenSSH
// splits these values at whitespace and understands double quotes.
func quoteArg(s string) string {
	if !strings.ContainsAny(s, " \t\"'\\") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func quoteList(paths []string) string {
	q := make([]string, 0, len(paths))
	for _, p := range paths {
		if p != "" {
			q = append(q, quoteArg(p))
		}
	}
	return strings.Join(q, " ")
}
