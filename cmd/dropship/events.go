package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/config"
)

// connectWait bounds how long `dropship events` waits for the NATS server.
const connectWait = 5 * time.Second

// eventsCmd is `dropship events`: a live view of events, with progress bars
// on a terminal, or one CloudEvent per line with -json. docs/events.md
// describes it.
func eventsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("events", "[-c FILE | -nats URL] [-agent A] [-target T] [-type TYPE] [-json] [-since TIME] [-stream NAME]", stderr)
	var n natsFlags
	n.register(fs)
	fs.Lookup("agent").Usage = "only events of this agent `name` (default: every agent)"
	target := fs.String("target", "", "only events of this target (or source) `name`")
	typ := fs.String("type", "", "only these `events`: all, transfer, progress, log, agent, fetch, a transfer state such as completed,\nagent.<state> or fetch.<state>\n(default: transfer lifecycle and agent events)")
	asJSON := fs.Bool("json", false, "print one CloudEvent per line (JSON) and nothing else, for scripts")
	var since sinceFlag
	fs.Var(&since, "since", "first replay the lifecycle and agent events stored in JetStream since `TIME`, then continue live:\na duration back from now (90m, 1h30m, 2d) or a local date and time (2026-12-01, 2026-12-01T10:00)\nor RFC 3339 (2026-12-01T10:00:00Z)")
	fs.StringVar(&n.stream, "stream", "", "JetStream stream `name` to replay from (default: the config's nats.stream, or "+config.Default().NATS.Stream+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("events takes no arguments, got %q", fs.Args())
	}
	filter := events.Filter{Agent: n.agent, Target: *target, Type: *typ}
	for opt, name := range map[string]string{"agent": filter.Agent, "target": filter.Target} {
		if name == "" {
			continue
		}
		if err := events.CheckToken(name); err != nil {
			return usagef("-%s: %v", opt, err)
		}
	}
	if err := n.resolve(stderr, false); err != nil {
		return err
	}
	if n.stream == "" {
		n.stream = config.Default().NATS.Stream
	}
	shown, err := filter.Subjects(n.prefix)
	if err != nil {
		return &usageError{err.Error() + suggestType(filter.Type)}
	}

	var term terminal
	if !*asJSON {
		term = openTerminal(stdout, os.Getenv)
	}
	plan, err := planSubscriptions(filter, n.prefix, shown, term != nil)
	if err != nil {
		return err
	}
	if !plan.bars {
		term = nil
	}
	v := newView(viewOptions{
		out:    stdout,
		errOut: stderr,
		json:   *asJSON,
		term:   term,
		style:  lineStyle{home: n.agent, loc: time.Local, color: term != nil && os.Getenv("NO_COLOR") == ""},
		shown:  shown,
		since:  since.text,
	})

	f := newFeed()
	bus, err := events.Connect(ctx, events.ConnectOptions{URL: n.url, Auth: n.connectAuth(), Name: "dropship events", OnStateChange: f.connState})
	if err != nil {
		return err
	}
	defer bus.Close()
	wctx, cancel := context.WithTimeout(ctx, connectWait)
	err = bus.WaitConnected(wctx)
	cancel()
	if ctx.Err() != nil {
		return nil // interrupted while connecting
	}
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (is the agent running? is -nats right?)", n.url, err)
	}
	// Subscribe before replaying, so that nothing published meanwhile is
	// missed; the view drops what it gets twice.
	nc := bus.Conn()
	for _, s := range plan.subscribe {
		if _, err := nc.Subscribe(s, f.deliver); err != nil {
			return fmt.Errorf("subscribe to %s: %w", s, err)
		}
	}
	fctx, cancel := context.WithTimeout(ctx, connectWait)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("subscribe to %s: %w", strings.Join(plan.subscribe, " "), err)
	}
	if err := permissionDenied(nc); err != nil {
		return err // a subscription the user may not have delivers nothing, silently
	}
	if !*asJSON {
		fmt.Fprintf(stderr, "dropship events: showing %s from %s (Ctrl-C to stop)\n", strings.Join(shown, " "), bus.Conn().ConnectedUrlRedacted())
	}

	if since.text != "" {
		if len(plan.replay) == 0 {
			fmt.Fprintf(stderr, "dropship events: -since: progress and log events are not stored; nothing to replay\n")
		} else if err := v.replay(ctx, bus, n.stream, plan.replay, since.duration()); err != nil {
			if ctx.Err() != nil {
				return v.close()
			}
			if pd := bus.PermissionDenied(); pd != nil {
				return fmt.Errorf("replay from JetStream stream %s: %w", n.stream, pd)
			}
			return replayError(err, n.stream)
		}
	}
	return v.run(ctx, f)
}

// replayError explains a failed replay.
func replayError(err error, stream string) error {
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("%w: is the stream name right? it is the config's nats.stream, or -stream", err)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("%w: this NATS server does not store events; -since needs the JetStream the agent publishes to (stream %s)", err, stream)
	}
	return err
}

// subscriptionPlan is what `dropship events` subscribes to.
type subscriptionPlan struct {
	subscribe []string // NATS subscriptions, which never overlap
	replay    []string // subjects to replay from JetStream with -since
	bars      bool     // progress bars are drawn
}

// planSubscriptions returns the subscriptions for showing the events on
// shown (the filter's subjects). With bars (a terminal, no -json), it also
// subscribes to the filter's progress and transfer lifecycle events whether
// shown or not, to start, move and end the bars; it does so only when the
// filter shows transfers at all.
func planSubscriptions(f events.Filter, prefix string, shown []string, terminal bool) (subscriptionPlan, error) {
	var p subscriptionPlan
	lifecycle := events.AllLifecycle(prefix)
	transfers := []string{lifecycle[0], prefix + ".*.*.progress"}
	// Fetch events are in the stream only where the agent has a source:
	// they are replayed when asked for by name, shown live otherwise (a
	// filter the stream does not capture would fail the whole replay).
	fetchAsked := strings.HasPrefix(strings.TrimPrefix(f.Type, "dev.dropship."), "fetch")
	for _, s := range shown {
		if matchesAny(lifecycle, s) || fetchAsked && events.SubjectCovers(events.AllFetch(prefix), s) {
			p.replay = append(p.replay, s)
		}
		if terminal && slices.ContainsFunc(transfers, func(t string) bool { return events.SubjectCovers(t, s) }) {
			p.bars = true
		}
	}
	if !p.bars {
		p.subscribe = shown
		return p, nil
	}
	for _, typ := range []string{"transfer", "progress"} {
		s, err := events.Filter{Agent: f.Agent, Target: f.Target, Type: typ}.Subjects(prefix)
		if err != nil {
			return p, &usageError{err.Error()}
		}
		p.subscribe = append(p.subscribe, s...)
	}
	for _, s := range shown {
		if !slices.ContainsFunc(p.subscribe, func(have string) bool { return events.SubjectCovers(have, s) }) {
			p.subscribe = append(p.subscribe, s)
		}
	}
	return p, nil
}

// eventTypes are the values of -type, short forms first.
func eventTypes() []string {
	types := []string{"all", "transfer", "progress", "log", "agent"}
	for _, st := range events.TransferStates {
		types = append(types, string(st))
	}
	for _, st := range events.TransferStates {
		types = append(types, "transfer."+string(st))
	}
	for _, st := range events.AgentStates {
		types = append(types, "agent."+string(st))
	}
	types = append(types, "fetch")
	for _, st := range events.FetchStates {
		types = append(types, "fetch."+string(st))
	}
	return types
}

// suggestType returns "; did you mean …?" naming the known -type value
// nearest to typ, or "" when typ is known or nothing is near.
func suggestType(typ string) string {
	if _, err := (events.Filter{Type: typ}).Subjects("x"); err == nil {
		return "" // known; the error is about something else
	}
	const cePrefix = "dev.dropship."
	short, full := strings.CutPrefix(strings.ToLower(typ), cePrefix)
	best, bestDist := "", 0
	for _, known := range eventTypes() {
		if d := editDistance(short, known); best == "" || d < bestDist {
			best, bestDist = known, d
		}
	}
	if bestDist > max(2, len(short)/3) {
		return ""
	}
	if full {
		best = cePrefix + best
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
