package transfer

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Class says why a transfer failed, in terms the agent can act on.
type Class string

// The failure classes. Scope tells whether a failure concerns the whole target
// (every file would fail the same way) or this file only; Retryable whether
// trying again later can help.
const (
	ClassAuth             Class = "auth"              // credentials refused, or a secret asked twice
	ClassHostKeyUnknown   Class = "hostkey-unknown"   // no known key and the policy forbids accepting one
	ClassHostKeyChanged   Class = "hostkey-changed"   // the server's key differs from the known one: possible attack
	ClassHostKeyMismatch  Class = "hostkey-mismatch"  // the key does not match the pinned fingerprint
	ClassPrompt           Class = "unexpected-prompt" // the client asked something nobody expected
	ClassConnectRefused   Class = "connect-refused"   // nothing listens on the port
	ClassConnectTimeout   Class = "connect-timeout"   // no answer to the TCP connect
	ClassConnectDNS       Class = "connect-dns"       // the host name does not resolve
	ClassConnectBanner    Class = "connect-banner"    // TCP connected but no SSH session came up
	ClassRemoteConfig     Class = "remote-config"     // the server cannot serve the protocol as configured (no SFTP subsystem, a noisy shell, atomic scp without a shell)
	ClassRemotePath       Class = "remote-path"       // the remote folder does not exist
	ClassRemotePermission Class = "remote-permission" // the server refused the write
	ClassRemoteFull       Class = "remote-full"       // the server failed a write (full disk or quota)
	ClassStalled          Class = "stalled"           // no progress for stall_timeout, or the overall deadline passed
	ClassLostConnection   Class = "lost-connection"   // the connection dropped mid-way
	ClassLocalFile        Class = "local-file"        // the local file is missing or unreadable
	ClassBadName          Class = "bad-name"          // the path cannot be sent: not a clean relative path, or a name no server can hold
	ClassLocalChanged     Class = "local-changed"     // the file changed (or was replaced) between its check and its rename
	ClassUnsafePath       Class = "unsafe-path"       // the path leads outside the watched folder, or to something that is not a regular file of it
	ClassRemoteExists     Class = "remote-exists"     // the remote file exists and overwrite = false
	ClassSourceChanged    Class = "source-changed"    // a remote source's file changed between its listing and its fetch, or after it
	ClassCanceled         Class = "canceled"          // the agent stopped the transfer (shutdown)
	ClassUnknown          Class = "unknown"           // nothing recognizable; treated as transient
)

// classInfo is what the agent needs to know about a class.
type classInfo struct {
	retryable bool
	target    bool // the whole target is affected, not only this file
	security  bool // report as a security event
}

var classes = map[Class]classInfo{
	ClassAuth:             {target: true},
	ClassHostKeyUnknown:   {target: true, security: true},
	ClassHostKeyChanged:   {target: true, security: true},
	ClassHostKeyMismatch:  {target: true, security: true},
	ClassPrompt:           {target: true},
	ClassConnectRefused:   {retryable: true, target: true},
	ClassConnectTimeout:   {retryable: true, target: true},
	ClassConnectDNS:       {retryable: true, target: true},
	ClassConnectBanner:    {retryable: true, target: true},
	ClassRemoteConfig:     {target: true},
	ClassRemotePath:       {target: true},
	ClassRemotePermission: {target: true},
	ClassRemoteFull:       {retryable: true, target: true},
	ClassStalled:          {retryable: true},
	ClassLostConnection:   {retryable: true, target: true},
	ClassLocalFile:        {retryable: true},
	ClassBadName:          {},
	ClassLocalChanged:     {},
	ClassUnsafePath:       {},
	ClassRemoteExists:     {},
	ClassSourceChanged:    {},
	ClassCanceled:         {retryable: true},
	ClassUnknown:          {retryable: true},
}

// Retryable reports whether trying again later can help. Classes that cannot
// be helped by a retry (credentials, host keys, remote paths and permissions)
// need an operator; retrying them in a loop could lock an account.
func (c Class) Retryable() bool { return classes[c].retryable }

// TargetWide reports whether the failure concerns the whole target rather
// than this one file, so the agent should hold the target's queue.
func (c Class) TargetWide() bool { return classes[c].target }

// Security reports whether the failure is a host-key problem that must be
// reported as a possible attack.
func (c Class) Security() bool { return classes[c].security }

// Classes lists every class, for documentation and tests.
func Classes() []Class {
	out := make([]Class, 0, len(classes))
	for c := range classes {
		out = append(out, c)
	}
	return out
}

// Error is a failed transfer (or login): its class, a message for the
// operator, and the client's exit code (-1 when it did not exit by itself).
// It never holds a secret: every line it quotes was scrubbed.
type Error struct {
	Class    Class
	Message  string
	ExitCode int

	refusedSession bool // the server refused a session on the shared connection
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Class, e.Message)
}

// ClassOf returns the class of err: the class of a transfer *Error in its
// chain, ClassUnknown otherwise, and "" for nil.
func ClassOf(err error) Class {
	if err == nil {
		return ""
	}
	var te *Error
	if errors.As(err, &te) {
		return te.Class
	}
	return ClassUnknown
}

// rule maps a message of an OpenSSH client to a class. Rules are tried in
// order: host keys first (a security verdict must never be masked), then
// authentication, connection set-up, remote and local file errors, and the
// generic signs of a lost connection last.
type rule struct {
	re    *regexp.Regexp
	class Class
	hint  string
}

var rules = []rule{
	{regexp.MustCompile(`REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed and you have requested strict checking`), ClassHostKeyChanged,
		"the server's host key changed; if the change is expected, update the known_hosts file or the pinned fingerprint"},
	{regexp.MustCompile(`^No [A-Z0-9-]+ host key is known for .* and you have requested strict checking`), ClassHostKeyUnknown,
		"the host key is unknown; add it to the target's known_hosts file or pin it with host_key = \"SHA256:…\" (see `dropship hostkey`)"},
	{regexp.MustCompile(`^Host key verification failed\.`), ClassHostKeyUnknown,
		"the host key could not be verified; check the target's host_key policy and known_hosts file"},
	{regexp.MustCompile(`Permission denied \([^)]*\)\.?$|^Permission denied, please try again|Too many authentication failures|^Received disconnect from .*: ?\d*: Too many authentication failures`), ClassAuth,
		"the server refused the credentials; check user, password_file, identity_file and passphrase_file"},
	{regexp.MustCompile(`Connection timed out during banner exchange|^kex_exchange_identification: |Connection reset by \S+ port -?\d+$|^ssh_exchange_identification: `), ClassConnectBanner,
		"the server accepted the TCP connection but no SSH session came up (throttling, firewall or a busy server)"},
	{regexp.MustCompile(`^ssh: connect to host .* port \d+: Connection refused`), ClassConnectRefused,
		"nothing is listening on the target's host and port"},
	{regexp.MustCompile(`^ssh: connect to host .* port \d+: (Connection timed out|No route to host|Network is unreachable|Operation timed out)`), ClassConnectTimeout,
		"the host did not answer; check host, port and firewalls"},
	{regexp.MustCompile(`^ssh: Could not resolve hostname `), ClassConnectDNS,
		"the host name does not resolve; check the target's host"},
	{regexp.MustCompile(`subsystem request failed on channel|Received message too long \d+|Ensure the remote shell produces no output|server expand-path extension is required`), ClassRemoteConfig,
		"the server cannot serve SFTP as configured; ask its administrator"},
	{regexp.MustCompile(`No space left on device|Disk quota exceeded|^(scp: )?write remote ".*": Failure|^(scp: )?Couldn't write to remote file ".*": Failure|^(scp: )?close remote ".*": Failure`), ClassRemoteFull,
		"the server failed the write (full disk or quota)"},
	// sftp's `cd` of a folder that is not there ("stat remote: …") looks
	// like its local stat error below: remote first.
	{regexp.MustCompile(`(?i)^l?stat remote: .*no such file`), ClassRemotePath,
		"the remote folder does not exist; check remote_dir"},
	{regexp.MustCompile(`(?i)^l?stat remote: .*permission denied`), ClassRemotePermission,
		"the server refused access; check the permissions of remote_dir for the target's user"},
	{regexp.MustCompile(`^(scp: )?stat local ".*": |^stat [^"].*: |^(scp: )?local ".*" is not a regular file|^File ".*" not found\.$|^(scp: )?(open|read) local ".*": |^Couldn't (open|read from) local file`), ClassLocalFile,
		"the local file could not be read"},
	// sftp prints the server's own status message where it has one, and
	// servers other than OpenSSH's word it their way ("lstat /x: no such
	// file or directory" from Go's pkg/sftp): the endings match in any case.
	{regexp.MustCompile(`(dest open|remote rename|remote mkdir|Couldn't (canonicalize|stat remote file|rename file)|realpath|remote open|remote fsetstat|remote setstat|Can't change directory).*: ?(?i:Permission denied)$|: Permission denied$`), ClassRemotePermission,
		"the server refused the write; check the permissions of remote_dir for the target's user"},
	{regexp.MustCompile(`(dest open|remote rename|remote mkdir|realpath|Can't change directory).*: ?(?i:No such file( or directory)?)$|path canonicalization failed|is not a directory|: No such file or directory$`), ClassRemotePath,
		"the remote folder does not exist; check remote_dir"},
	{regexp.MustCompile(`^Timeout, server .* not responding|Connection to .* closed by remote host|^(scp: )?lost connection|Broken pipe|Connection reset by peer|^client_loop: |^(scp: )?Connection closed$|^Connection closed\.?$|^Read from remote host .*: |^(scp: )?Couldn't send packet|packet_write_wait|Connection lost`), ClassLostConnection,
		"the connection dropped"},
}

// classify turns a failed client's output into an *Error. lines are the
// client's scrubbed output lines, oldest first.
func classify(lines []string, exitCode int) *Error {
	var best *rule
	var bestLine string
	for i := range rules {
		for _, l := range lines {
			if rules[i].re.MatchString(l) {
				best, bestLine = &rules[i], l
				break
			}
		}
		if best != nil {
			break
		}
	}
	if best == nil {
		return &Error{Class: ClassUnknown, Message: fmt.Sprintf("client exited with status %d: %s", exitCode, lastLines(lines, 3)), ExitCode: exitCode}
	}
	msg := bestLine
	if best.hint != "" {
		msg += " (" + best.hint + ")"
	}
	return &Error{Class: best.class, Message: msg, ExitCode: exitCode}
}

// lastLines joins the last n non-empty lines for an error message.
func lastLines(lines []string, n int) string {
	if len(lines) == 0 {
		return "no output"
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
