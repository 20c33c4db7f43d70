package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/dropship/dropship/events"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"unicode"
)

// The checks below validate one value each. Their errors are the message
// part of a Problem: the caller adds the file, line and key.

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// checkToken accepts a NATS subject token: not empty, no whitespace, no
// ".", "*" or ">".
// The subject-token rules are the events package's: one place.
var (
	checkToken         = events.CheckToken
	checkTargetName    = events.CheckTarget
	checkSubjectPrefix = events.CheckPrefix
)

func checkStream(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case strings.IndexFunc(s, isSpaceOrControl) >= 0 || strings.ContainsAny(s, `.*>/\`):
		return fmt.Errorf(`%q is not a valid JetStream stream name: it must not contain whitespace, ".", "*", ">", "/" or "\"`, s)
	}
	return nil
}

// checkHostPort accepts host:port with a numeric port from 0 to 65535; an
// empty host means every interface.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf(`%q is not host:port, such as "127.0.0.1:4222"`, s)
	}
	if strings.IndexFunc(host, isSpaceOrControl) >= 0 {
		return fmt.Errorf("%q: the host must not contain whitespace", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: the port must be a number from 0 to 65535", s)
	}
	return nil
}

// checkNATSURLs accepts one or more comma-separated server URLs.
func checkNATSURLs(s string) error {
	for _, raw := range strings.Split(s, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			return fmt.Errorf("%q has an empty URL; separate URLs with single commas", s)
		}
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw // as nats.go takes "127.0.0.1:4222"
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return fmt.Errorf(`%q is not a server URL such as "nats://127.0.0.1:4222"`, strings.TrimPrefix(raw, "nats://"))
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf(`%q: the scheme must be nats://, tls://, ws:// or wss://`, u.Redacted())
		}
		if u.User != nil {
			return fmt.Errorf("%q must not hold credentials (user:password@ or token@); put them in user and password_file, token_file or credentials_file", u.Redacted())
		}
	}
	return nil
}

// checkHost accepts a host name, an ssh_config alias or an IP address, and
// returns it without the brackets an IPv6 address may come in.
func checkHost(s string) (string, error) {
	if h, ok := strings.CutPrefix(s, "["); ok {
		if h, ok := strings.CutSuffix(h, "]"); ok && net.ParseIP(h) != nil {
			return h, nil
		}
		return s, fmt.Errorf("%q is not an IP address in brackets", s)
	}
	if net.ParseIP(s) != nil {
		return s, nil
	}
	switch {
	case strings.Contains(s, "://"):
		return s, fmt.Errorf("%q is a URL: give the host name only, and the port in port", s)
	case strings.Contains(s, "@"):
		return s, fmt.Errorf("%q must be a host name only: give the user in user", s)
	case strings.Contains(s, ":"):
		return s, fmt.Errorf("%q must be a host name only: give the port in port", s)
	case strings.HasPrefix(s, "-"):
		return s, fmt.Errorf(`%q must not start with "-"`, s)
	}
	for _, r := range s {
		if !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) || r == '.' || r == '-' || r == '_') {
			return s, fmt.Errorf("%q is not a host name or IP address", s)
		}
	}
	return s, nil
}

func checkUser(s string) error {
	switch {
	case strings.IndexFunc(s, isSpaceOrControl) >= 0:
		return fmt.Errorf("%q must not contain whitespace or control characters", s)
	case strings.HasPrefix(s, "-"):
		return fmt.Errorf(`%q must not start with "-"`, s)
	}
	return nil
}

func checkRemoteDir(s string) error {
	switch {
	case s == "":
		return errors.New(`must not be empty; use "." for the login folder`)
	case strings.ContainsAny(s, "\n\r\x00"):
		return errors.New("must not contain a newline or NUL character")
	}
	return nil
}

// checkHostKey accepts "strict", "accept-new" or "SHA256:" and the 43
// unpadded base64 characters of a SHA-256 fingerprint, as OpenSSH prints it.
func checkHostKey(s string) error {
	const how = "get it with `dropship hostkey -target NAME` or `ssh-keygen -lf KEYFILE`"
	if s == HostKeyStrict || s == HostKeyAcceptNew {
		return nil
	}
	fp, ok := strings.CutPrefix(s, "SHA256:")
	switch {
	case strings.HasPrefix(strings.ToUpper(s), "MD5:") || looksLikeMD5(s):
		return errors.New("MD5 fingerprints are not supported: pin the SHA256 fingerprint; " + how)
	case !ok && strings.HasPrefix(strings.ToUpper(s), "SHA256:"):
		return errors.New(`write the prefix as "SHA256:", in capitals`)
	case !ok:
		return fmt.Errorf(`%q is not "strict", "accept-new" or a pinned "SHA256:..." fingerprint`, s)
	case strings.HasSuffix(fp, "."):
		return errors.New(`remove the trailing ".": it ends OpenSSH's sentence and is not part of the fingerprint`)
	case strings.HasSuffix(fp, "="):
		return errors.New(`remove the "=" padding: OpenSSH prints SHA256 fingerprints without it`)
	case len(fp) != 43:
		return fmt.Errorf(`a SHA256 fingerprint has 43 base64 characters after "SHA256:", this one has %d; %s`, len(fp), how)
	}
	if b, err := base64.RawStdEncoding.Strict().DecodeString(fp); err != nil || len(b) != 32 {
		return fmt.Errorf("%q is not a valid SHA256 fingerprint (bad base64); %s", s, how)
	}
	return nil
}

// looksLikeMD5 reports whether s is sixteen colon-separated hex pairs.
func looksLikeMD5(s string) bool {
	parts := strings.Split(s, ":")
	if len(parts) != 16 {
		return false
	}
	for _, p := range parts {
		if len(p) != 2 || strings.Trim(p, "0123456789abcdefABCDEF") != "" {
			return false
		}
	}
	return true
}

// checkSSHOption accepts "Key=Value" or "Key Value" unless Key is refused.
func checkSSHOption(s string) error {
	if strings.ContainsAny(s, "\n\r\x00") {
		return errors.New("must not contain a newline")
	}
	key, value := splitSSHOption(s)
	if key == "" || strings.IndexFunc(key, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsLetter(r) && !unicode.IsDigit(r) }) >= 0 {
		return fmt.Errorf(`%q is not an ssh option: write "Key=Value" or "Key Value"`, s)
	}
	if value == "" {
		return fmt.Errorf(`%q has no value: write "Key=Value"`, s)
	}
	if why := refusedSSHOption(key); why != "" {
		return errors.New(why)
	}
	return nil
}

// splitSSHOption splits "Key=Value", "Key Value" or "Key = Value".
func splitSSHOption(s string) (key, value string) {
	s = strings.TrimSpace(s)
	i := strings.IndexAny(s, "= \t")
	if i < 0 {
		return s, ""
	}
	key, value = s[:i], strings.TrimLeft(s[i:], " \t")
	value = strings.TrimSpace(strings.TrimPrefix(value, "="))
	return key, value
}

// checkGlob accepts a path.Match pattern whose elements may also be "**".
func checkGlob(s string) error {
	if s == "" {
		return errors.New("empty pattern")
	}
	for _, elem := range strings.Split(s, "/") {
		if elem == "**" {
			continue
		}
		if strings.Contains(elem, "**") {
			return fmt.Errorf(`%q: "**" must be a whole path element, as in "logs/**/*.csv"`, s)
		}
		if _, err := path.Match(elem, ""); err != nil {
			return fmt.Errorf("%q is not a valid pattern: check its [ ] and \\ (syntax of Go's path.Match)", s)
		}
	}
	return nil
}

func checkReadyMarker(s string) error {
	if strings.ContainsAny(s, "/\x00") {
		return fmt.Errorf(`%q must be a file name suffix such as ".done", without "/"`, s)
	}
	return nil
}

// checkPath rejects what cannot be a usable local path.
func checkPath(s string) error {
	switch {
	case strings.Contains(s, "\x00"):
		return errors.New("must not contain a NUL character")
	case s == "~" || strings.HasPrefix(s, "~/"):
		return fmt.Errorf(`%q: "~" is not expanded; write the full path`, s)
	}
	return nil
}

func checkCredentialName(name string) error {
	switch {
	case name == "":
		return errors.New(`credential: needs a name, as in "credential:acme.pass"`)
	case strings.ContainsAny(name, "/\x00") || name == "." || name == "..":
		return fmt.Errorf(`credential name %q must be a plain file name, without "/"`, name)
	}
	return nil
}
