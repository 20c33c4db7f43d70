package main

import (
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
)

// connectAuth is how the commands that ask an agent log in to NATS: the
// config's [nats] login and TLS, or the -creds file given instead.
func (n *natsFlags) connectAuth() events.Auth {
	if n.creds != "" && n.creds != n.auth.CredentialsFile {
		return events.Auth{CredentialsFile: n.creds, TLS: n.auth.TLS}
	}
	return n.auth
}

// natsAuth is connectAuth as nats.go options.
func (n *natsFlags) natsAuth() ([]nats.Option, error) {
	return n.connectAuth().Options()
}

// permissionDenied returns the permissions violation the server reported on
// nc, if any: a request the user may not publish, or whose answer it may not
// receive, is not answered, and saying "is the agent running?" would send
// the operator the wrong way. It waits a moment for the server's error,
// which may come after the request gave up.
func permissionDenied(nc *nats.Conn) error {
	_ = nc.FlushTimeout(time.Second)
	if err := nc.LastError(); err != nil && errors.Is(err, nats.ErrPermissionViolation) {
		return events.AsPermissionDenied(err)
	}
	return nil
}
