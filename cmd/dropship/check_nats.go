package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/internal/config"
)

// natsCheckTimeout bounds `check -connect`'s look at the NATS server.
const natsCheckTimeout = 10 * time.Second

// checkNATS is `check -connect`'s look at the NATS server, as the agent
// checks it at start: the server's version, JetStream, and that the stream
// exists and captures dropship's subjects. It creates nothing. It prints one
// "nats: ok" or "nats: FAILED" line (with the fix), and reports whether the
// agent's events could be stored.
func checkNATS(ctx context.Context, cfg *config.Config, stdout io.Writer) bool {
	url := agent.NATSURL(cfg)
	embedded := cfg.NATS.URL == ""
	auth, err := agent.NATSAuth(cfg)
	if err != nil {
		fmt.Fprintf(stdout, "nats: FAILED: %v\n", err)
		return false
	}
	opts := []nats.Option{nats.Name("dropship check"), nats.Timeout(5 * time.Second)}
	aopts, err := auth.Options()
	if err != nil {
		fmt.Fprintf(stdout, "nats: FAILED: %v\n", err)
		return false
	}
	nc, err := nats.Connect(url, append(opts, aopts...)...)
	if err != nil {
		if embedded {
			fmt.Fprintf(stdout, "nats: ok: the embedded server (%s) runs inside the agent, which is not running; it creates its stream %s at start\n", url, cfg.NATS.Stream)
			return true
		}
		fmt.Fprintf(stdout, "nats: FAILED: cannot connect to %s: %v\n  fix: check nats.url (and the login and TLS keys of [nats]), and that the NATS server is up\n", url, err)
		return false
	}
	nc.Close()

	cctx, cancel := context.WithTimeout(ctx, natsCheckTimeout)
	defer cancel()
	bus, err := events.Connect(cctx, events.ConnectOptions{URL: url, Auth: auth, Name: "dropship check"})
	if err != nil {
		fmt.Fprintf(stdout, "nats: FAILED: %v\n", err)
		return false
	}
	defer bus.Close()
	if err := bus.WaitConnected(cctx); err != nil {
		fmt.Fprintf(stdout, "nats: FAILED: cannot connect to %s: %v\n", url, err)
		return false
	}
	setup := agent.StreamSetupOf(cfg, false, false)
	c, err := bus.CheckStream(cctx, setup)
	if pd := bus.PermissionDenied(); err != nil && pd != nil {
		fmt.Fprintf(stdout, "nats: FAILED: %v\n", pd)
		return false
	}
	if err != nil {
		fmt.Fprintf(stdout, "nats: FAILED: %v\n  fix: check that the NATS server at %s answers JetStream requests\n", err, url)
		return false
	}
	for _, w := range c.Warnings {
		fmt.Fprintf(stdout, "nats: warning: %s\n", w)
	}
	server := fmt.Sprintf("nats-server %s at %s", c.ServerVersion, url)
	switch {
	case c.OK():
		fmt.Fprintf(stdout, "nats: ok: %s, JetStream stream %s captures %s (duplicate window %s, %d replica(s))\n",
			server, c.Stream, strings.Join(setup.Subjects, " "), c.DuplicateWindow, c.Replicas)
		return true
	case cfg.NATS.AutoCreateStream && c.Missing:
		fmt.Fprintf(stdout, "nats: ok: %s; JetStream stream %s does not exist yet: the agent creates it at start (auto_create_stream = true)\n", server, c.Stream)
		return true
	}
	fmt.Fprintf(stdout, "nats: FAILED: %s: %s\n  fix: %s\n", server, c.Problem, c.Fix)
	return false
}
