package transfer

import (
	"regexp"
	"strings"
)

// promptKind is what a prompt on the pty asks for.
type promptKind int

const (
	promptNone promptKind = iota
	promptPassword
	promptPassphrase
	promptHostKey       // "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
	promptHostKeyRetype // "Please type 'yes', 'no' or the fingerprint: "
	promptYesNo         // any other yes/no confirmation: always refused
	promptUnknown       // looks like a prompt, but nobody expected it
)

func (k promptKind) String() string {
	switch k {
	case promptPassword:
		return "password"
	case promptPassphrase:
		return "passphrase"
	case promptHostKey:
		return "host key confirmation"
	case promptHostKeyRetype:
		return "host key confirmation (retype)"
	case promptYesNo:
		return "yes/no confirmation"
	case promptUnknown:
		return "unexpected prompt"
	}
	return "none"
}

var (
	// "user@host's password: " (password auth) and "(user@host) Password: "
	// (keyboard-interactive through PAM); a multi-line keyboard-interactive
	// prompt has its last line alone in the tail.
	passwordRE = regexp.MustCompile(`(?i)(^|[ '(])password: ?$`)
	// A password change asks for the old, the new or a repeated password:
	// that needs an operator, never an automatic answer.
	passwordChangeRE = regexp.MustCompile(`(?i)(old|new|current|retype|again|confirm)[^:]*password: ?$`)
	passphraseRE     = regexp.MustCompile(`^Enter passphrase for key '.*': ?$`)
	// The fingerprint line of the host-key block, OpenSSH 9.x and 10.x.
	fingerprintRE = regexp.MustCompile(`^([A-Z0-9-]+) key fingerprint is:? (SHA256:[A-Za-z0-9+/]{43})\.?$`)
)

// classifyPrompt decides whether the unterminated tail of the output is a
// prompt that is complete (its last byte has arrived) and, if so, which.
// idle says the client has printed nothing for a while, so a tail that merely
// looks like a question counts as a prompt nobody expected.
func classifyPrompt(tail string, idle bool) promptKind {
	switch {
	case tail == "":
		return promptNone
	case strings.HasSuffix(tail, "(yes/no/[fingerprint])? "):
		return promptHostKey
	case strings.HasSuffix(tail, "Please type 'yes', 'no' or the fingerprint: "):
		return promptHostKeyRetype
	case strings.HasSuffix(tail, "(yes/no)? "), strings.HasSuffix(tail, "Please type 'yes' or 'no': "):
		return promptYesNo
	case passphraseRE.MatchString(tail):
		return promptPassphrase
	case passwordRE.MatchString(tail) && !passwordChangeRE.MatchString(tail):
		return promptPassword
	case strings.HasSuffix(tail, ": ") || strings.HasSuffix(tail, "? "):
		// Every OpenSSH and PAM prompt ends like this; a progress frame or
		// a line being written never rests on it for long.
		if idle {
			return promptUnknown
		}
	case idle && (strings.HasSuffix(tail, ":") || strings.HasSuffix(tail, "?")):
		if _, isFrame := parseProgress(tail); !isFrame {
			return promptUnknown
		}
	}
	return promptNone
}

// mayCompleteAPrompt is a cheap test, run for every byte read, of whether the
// text read since the last line or frame boundary could end with a prompt.
func mayCompleteAPrompt(b []byte) bool {
	n := len(b)
	return n >= 2 && b[n-1] == ' ' && (b[n-2] == ':' || b[n-2] == '?')
}

// hostKeyFingerprint finds the key type and SHA256 fingerprint in the lines
// of a host-key confirmation block.
func hostKeyFingerprint(lines []string) (keyType, fp string) {
	for i := len(lines) - 1; i >= 0; i-- {
		if m := fingerprintRE.FindStringSubmatch(lines[i]); m != nil {
			return m[1], m[2]
		}
	}
	return "", ""
}
