package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
)

func eventsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("events", "[-c FILE | -nats URL] [-agent A] [-target T] [-type TYPE] [-json] [-since DURATION]", stderr)
	var n natsFlags
	n.register(fs)
	target := fs.String("target", "", "only events of this target `name`")
	typ := fs.String("type", "", "only these events: all, transfer, progress, log, agent, or a state such as completed")
	asJSON := fs.Bool("json", false, "print one CloudEvent per line (JSON), for scripts")
	since := fs.Duration("since", 0, "first replay stored lifecycle events of the last `DURATION` (e.g. 1h)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("events takes no arguments, got %q", fs.Args())
	}
	agentFilter := n.agent
	if err := n.resolve(stderr, false); err != nil {
		return err
	}
	filter := events.Filter{Agent: agentFilter, Target: *target, Type: *typ}
	subjects, err := filter.Subjects(n.prefix)
	if err != nil {
		return &usageError{err.Error()}
	}
	bus, err := events.Connect(ctx, events.ConnectOptions{URL: n.url, CredentialsFile: n.creds, Name: "dropship events"})
	if err != nil {
		return err
	}
	defer bus.Close()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = bus.WaitConnected(wctx)
	cancel()
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (is the agent running? is -nats right?)", n.url, err)
	}
	out := newEventPrinter(stdout, *asJSON)
	live := make(chan events.Event, 1024)
	for _, s := range subjects {
		sub, err := bus.Conn().Subscribe(s, func(m *nats.Msg) {
			if ev, err := events.ParseMsg(m); err == nil {
				select {
				case live <- ev:
				default:
				}
			}
		})
		if err != nil {
			return fmt.Errorf("subscribe to %s: %w", s, err)
		}
		defer sub.Unsubscribe()
	}
	seen := map[string]bool{}
	if *since > 0 {
		cfgStream := "DROPSHIP_EVENTS"
		if err := bus.Replay(ctx, cfgStream, subjects, *since, func(ev events.Event) {
			seen[ev.ID] = true
			out.print(ev)
		}); err != nil {
			fmt.Fprintln(stderr, "dropship: replay:", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-live:
			if seen[ev.ID] {
				continue
			}
			out.print(ev)
		}
	}
}

// eventPrinter prints events as lines for people or JSON for scripts.
type eventPrinter struct {
	w    io.Writer
	json bool
}

func newEventPrinter(w io.Writer, asJSON bool) *eventPrinter {
	return &eventPrinter{w: w, json: asJSON}
}

func (p *eventPrinter) print(ev events.Event) {
	if p.json {
		b, _ := json.Marshal(ev)
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	ts := ev.Time.Local().Format("15:04:05")
	if st, ok := ev.TransferState(); ok {
		d, err := ev.Transfer()
		if err != nil {
			return
		}
		line := fmt.Sprintf("%s %-9s %s %s -> %s:%s", ts, st, d.Agent, d.LocalPath, d.Target.Name, d.RemotePath)
		switch {
		case d.Error != nil:
			line += fmt.Sprintf(" [%s] %s", d.Error.Class, d.Error.Message)
		case st == events.TransferCompleted:
			line += fmt.Sprintf(" (%d bytes in %.1fs)", d.SizeBytes, d.DurationSeconds)
		}
		fmt.Fprintln(p.w, line)
		return
	}
	if st, ok := ev.AgentState(); ok {
		d, _ := ev.Agent()
		fmt.Fprintf(p.w, "%s agent %-8s %s %s\n", ts, st, d.Agent, d.Message)
		return
	}
	switch ev.Type {
	case events.TypeLog:
		d, _ := ev.Log()
		fmt.Fprintf(p.w, "%s log       %s %s\n", ts, d.Target.Name, d.Line)
	case events.TypeProgress:
		d, _ := ev.Progress()
		fmt.Fprintf(p.w, "%s progress  %s %3d%% %d/%d bytes\n", ts, d.LocalPath, d.Percent, d.BytesSent, d.SizeBytes)
	}
}
