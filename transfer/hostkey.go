package transfer

import (
	"context"
	"errors"
	"log/slog"
)

// HostKey is a server's host key as ssh shows it in its confirmation prompt.
type HostKey struct {
	Type        string // "ED25519", "RSA", "ECDSA", …
	Fingerprint string // "SHA256:…", the value to pin in host_key
}

// FetchHostKey connects to the target with the real ssh, trusting no
// known_hosts file, reads the fingerprint ssh shows when it asks to confirm
// the key, answers "no", and returns it. Nothing is authenticated and nothing
// is written. The key is the one ssh negotiates by default, so it is the one a
// pinned host_key is compared with.
func FetchHostKey(ctx context.Context, t Target, opts Options) (HostKey, error) {
	if opts.SSH == "" {
		opts.SSH = "ssh"
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// The session answers for the probe, which refuses every key: with t,
	// a correct pin would be accepted and ssh would log in.
	probe := probeTarget(&t)
	res, err := runSession(ctx, sessionSpec{
		prog:         opts.SSH,
		args:         probeArgs(&t),
		loginTimeout: t.ConnectTimeout + loginSlack,
		target:       &probe,
		scrub:        newScrubber(),
		logger:       logger,
		onLine:       opts.OnConnectionLine,
	})
	if err != nil {
		return HostKey{}, err
	}
	if res.hostKey.fingerprint != "" {
		return HostKey{Type: res.hostKey.keyType, Fingerprint: res.hostKey.fingerprint}, nil
	}
	if res.err != nil {
		return HostKey{}, res.err
	}
	if e := classify(res.lines, res.exitCode); e.Class != ClassUnknown {
		return HostKey{}, e
	}
	return HostKey{}, errors.New("ssh showed no host key: " + lastLines(res.lines, 3))
}
