package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/agent"
)

// discoverTimeout bounds the wait for the first agent's answer to the
// discovery; later ones are gathered for agent.DiscoverQuiet after the last.
const discoverTimeout = 5 * time.Second

// fleetParallel bounds the requests in flight to the agents of a fleet.
const fleetParallel = 32

// wantAll says whether the command asks every agent: -all, or -agent '*'
// (which cannot be a name). A name that cannot be a subject token is
// refused with what to use instead.
func (n *natsFlags) wantAll(all bool) (bool, error) {
	switch {
	case n.agent == "*":
		n.agent = ""
		return true, nil
	case all && n.agent != "":
		return false, usagef("-all asks every agent and -agent one of them: give one of the two")
	case n.agent != "":
		if err := events.CheckToken(n.agent); err != nil {
			return false, usagef("-agent %q: %v; to ask every agent, use -all", n.agent, err)
		}
	}
	return all, nil
}

// discover connects and finds every agent under the subject prefix. It
// fails when there is none.
func (n *natsFlags) discover(ctx context.Context) (*nats.Conn, [][]agent.Instance, error) {
	nc, err := n.connect()
	if err != nil {
		return nil, nil, err
	}
	found, err := agent.Discover(ctx, nc, n.prefix, discoverTimeout)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if len(found) == 0 {
		if err := permissionDenied(nc); err != nil {
			nc.Close()
			return nil, nil, err
		}
		nc.Close()
		return nil, nil, fmt.Errorf("no dropship agent answers on NATS at %s under the subject prefix %q (asked the control services, $SRV.INFO.%s): are they running, and are -nats and -prefix right?", n.url, n.prefix, events.ServiceName)
	}
	return nc, byName(found), nil
}

// byName groups instances by agent name (several answer for one name only
// when a clone started beside another).
func byName(found []agent.Instance) [][]agent.Instance {
	var out [][]agent.Instance
	for _, in := range found {
		if len(out) > 0 && out[len(out)-1][0].Agent == in.Agent {
			out[len(out)-1] = append(out[len(out)-1], in)
			continue
		}
		out = append(out, []agent.Instance{in})
	}
	return out
}

// otherAgents is what request adds when the agent asked does not answer:
// the names of the agents that do, if any.
func (n *natsFlags) otherAgents(ctx context.Context, nc *nats.Conn) string {
	found, err := agent.Discover(ctx, nc, n.prefix, time.Second)
	if err != nil || len(found) == 0 {
		return ""
	}
	var names []string
	for _, group := range byName(found) {
		names = append(names, group[0].Agent)
	}
	return fmt.Sprintf("; the agents that answer: %s (-all asks them all)", strings.Join(names, ", "))
}

// eachAgent runs ask for every agent, at most fleetParallel at a time, and
// returns their results in the order of agents.
func eachAgent[T any](agents [][]agent.Instance, ask func(name string) T) []T {
	out := make([]T, len(agents))
	sem := make(chan struct{}, fleetParallel)
	var wg sync.WaitGroup
	for i, group := range agents {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = ask(group[0].Agent)
		}()
	}
	wg.Wait()
	return out
}

// fleetEntry is one agent in `status -all`: its status, or why it has none.
type fleetEntry struct {
	agent.Status
	// Error says why the agent did not answer its status endpoint.
	Error string `json:"error,omitempty"`
	// Instances lists the instances that answer for this name, when
	// there are several: then status and retry reach either.
	Instances []agent.Instance `json:"instances,omitempty"`
}

// fleetStatus is `status -all`: every agent's status, in a table or as a
// JSON list.
func fleetStatus(ctx context.Context, n *natsFlags, stdout io.Writer, asJSON bool) error {
	nc, agents, err := n.discover(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	fleet := eachAgent(agents, func(name string) fleetEntry {
		var e fleetEntry
		if err := ask(ctx, nc, name, events.Subjects{Prefix: n.prefix, Agent: name}.Control(events.ControlStatus), struct{}{}, &e.Status); err != nil {
			e.Error = err.Error()
		}
		return e
	})
	var silent []string
	for i, group := range agents {
		e := &fleet[i]
		if e.Error != "" {
			e.Agent, e.Host, e.Version = group[0].Agent, group[0].Host, group[0].Version
			silent = append(silent, e.Agent)
		}
		if len(group) > 1 {
			e.Instances = group
		}
	}
	if ctx.Err() != nil {
		return errInterrupted
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(fleet); err != nil {
			return err
		}
	} else {
		printFleet(stdout, fleet)
	}
	if len(silent) > 0 {
		return fmt.Errorf("%d of %d agent(s) did not answer their status: %s", len(silent), len(fleet), strings.Join(silent, ", "))
	}
	return nil
}

// printFleet prints `status -all`: a row per target of every agent, then
// the failed files and those delivered but not archived or deleted, and
// the agents whose events are not stored or whose name is taken twice.
func printFleet(w io.Writer, fleet []fleetEntry) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tHOST\tVERSION\tUP\tNATS\tOUTBOX\tEVENTS\tTARGET\tSTATE\tQUEUED\tRUNNING\tFAILED\tPOST-FAILED\tDETAIL")
	for _, e := range fleet {
		host := orDash(e.Host)
		if len(e.Instances) > 1 {
			host = fmt.Sprintf("%s (+%d more: see below)", host, len(e.Instances)-1)
		}
		if e.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\tNO ANSWER\t-\t-\t-\t-\t%s\n", e.Agent, host, orDash(e.Version), e.Error)
			continue
		}
		nats := "connected"
		if !e.NATSConnected {
			nats = "DISCONNECTED"
		}
		outbox := fmt.Sprint(e.OutboxDepth)
		if e.OutboxOldest != nil {
			outbox += fmt.Sprintf(" (oldest %s)", time.Since(*e.OutboxOldest).Round(time.Second))
		}
		stored := "stored"
		switch {
		case e.Stream.CheckedAt == nil:
			stored = "-"
		case !e.Stream.Stored:
			stored = "NOT STORED"
		}
		agentCols := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", e.Agent, host, e.Version, time.Since(e.StartedAt).Round(time.Second), nats, outbox, stored)
		if len(e.Targets) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\tno targets\n", agentCols)
			continue
		}
		postFailed := map[string]int{}
		for _, pf := range e.PostFailed {
			postFailed[pf.Target]++
		}
		for i, t := range e.Targets {
			if i > 0 {
				agentCols = "\t\t\t\t\t\t"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", agentCols, t.Name, strings.ToUpper(t.State), t.Queued, t.Running, t.Failed, postFailed[t.Name], targetDetail(t))
		}
	}
	tw.Flush()
	for _, e := range fleet {
		if len(e.Instances) > 1 {
			var hosts []string
			for _, in := range e.Instances {
				hosts = append(hosts, fmt.Sprintf("%s (instance %s)", orDash(in.Host), in.ID))
			}
			fmt.Fprintf(w, "\nagent %s: %d instances answer for this name, on hosts %s: status and retry reach either; give each its own [agent] name and restart it\n", e.Agent, len(e.Instances), strings.Join(hosts, ", "))
		}
		if e.Error == "" && !e.Stream.Stored && e.Stream.CheckedAt != nil {
			fmt.Fprintf(w, "\nagent %s: EVENTS NOT STORED (stream %s): %s; they wait in the outbox\n  fix: %s\n", e.Agent, e.Stream.Name, e.Stream.Problem, e.Stream.Fix)
		}
	}
	var postFailed, failed int
	for _, e := range fleet {
		postFailed += len(e.PostFailed)
		failed += len(e.Failed)
	}
	if postFailed > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DELIVERED, NOT ARCHIVED/DELETED (fix, then dropship retry ID)\tAGENT\tFILE\tTARGET\tOPERATION\tATTEMPTS\tSINCE\tNEXT TRY\tERROR")
		for _, e := range fleet {
			for _, f := range e.PostFailed {
				fmt.Fprintf(tw, "%s\t%s\t%q\t%s\t%s\t%d\t%s\t%s\t%s\n", f.ID, e.Agent, f.Path, f.Target, f.Operation, f.Attempts, f.Since.Local().Format(time.RFC3339), f.NextTry.Local().Format(time.RFC3339), f.Error)
			}
		}
		tw.Flush()
	}
	if failed > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "FAILED (dropship retry ID)\tAGENT\tFILE\tTARGET\tCLASS\tATTEMPTS\tSINCE\tERROR")
		for _, e := range fleet {
			for _, f := range e.Failed {
				fmt.Fprintf(tw, "%s\t%s\t%q\t%s\t%s\t%d\t%s\t%s\n", f.ID, e.Agent, f.Path, f.Target, f.Class, f.Attempts, f.Since.Local().Format(time.RFC3339), f.Error)
			}
		}
		tw.Flush()
	}
}

// targetDetail is the DETAIL column of a target in status: why it fails,
// and when its window opens.
func targetDetail(t agent.TargetStatus) string {
	detail := ""
	if t.State != "ok" {
		detail = t.Class + ": " + t.Error
		if t.NextProbe != nil {
			detail += fmt.Sprintf(" (next try in %s)", time.Until(*t.NextProbe).Round(time.Second))
		}
	}
	if t.WindowOpens != nil {
		detail = strings.TrimPrefix(detail+"; ", "; ") + fmt.Sprintf("outside its window %s: opens %s", t.Window, t.WindowOpens.Local().Format("Mon 15:04"))
	}
	return detail
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// retryResult is one agent's answer to a retry sent to every agent.
type retryResult struct {
	agent   string
	resp    agent.RetryResponse
	notMine bool
	err     error
}

// fleetRetry sends req to every agent: for an id, the one that owns it
// takes it and the others answer that it is not theirs; with -failed,
// every agent queues its failed files again.
func fleetRetry(ctx context.Context, n *natsFlags, req agent.RetryRequest, stdout, stderr io.Writer) error {
	nc, agents, err := n.discover(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	results := eachAgent(agents, func(name string) retryResult {
		r := retryResult{agent: name}
		r.err = ask(ctx, nc, name, events.Subjects{Prefix: n.prefix, Agent: name}.Control(events.ControlRetry), req, &r.resp)
		var se *serviceError
		// An agent older than the not-mine code answers 400 with this.
		if errors.As(r.err, &se) && (se.code == agent.ErrCodeNotMine || strings.HasPrefix(se.msg, "no failed or waiting transfer")) {
			r.notMine, r.err = true, nil
		}
		return r
	})
	if ctx.Err() != nil {
		return errInterrupted
	}
	var took, failed, notMine []string
	for _, r := range results {
		switch {
		case r.err != nil:
			fmt.Fprintf(stderr, "dropship: %v\n", r.err)
			failed = append(failed, r.agent)
		case r.notMine:
			notMine = append(notMine, r.agent)
		case req.ID != "" && r.resp.Requeued == 0 && r.resp.PostRetried == 0:
			notMine = append(notMine, r.agent)
		default:
			took = append(took, r.agent)
			prefix := "agent " + r.agent + ": "
			if req.ID != "" {
				prefix = "agent " + r.agent + " took it: "
			}
			printRetry(stdout, prefix, r.resp)
		}
	}
	if req.ID != "" && len(took) == 0 {
		if len(failed) > 0 {
			return fmt.Errorf("no agent that answered has a failed or waiting transfer with id or path %q (not theirs: %s; no answer from %s)", req.ID, orDash(strings.Join(notMine, ", ")), strings.Join(failed, ", "))
		}
		return fmt.Errorf("no agent has a failed or waiting transfer with id or path %q (asked %d: %s)", req.ID, len(notMine), strings.Join(notMine, ", "))
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d agent(s) did not take the request: %s", len(failed), len(results), strings.Join(failed, ", "))
	}
	return nil
}

// printRetry says what an agent did with a retry; prefix names the agent
// when several were asked.
func printRetry(w io.Writer, prefix string, resp agent.RetryResponse) {
	fmt.Fprintf(w, "%s%d file(s) queued again\n", prefix, resp.Requeued)
	if resp.PostRetried > 0 {
		fmt.Fprintf(w, "%s%d delivered file(s): archive, delete or move tried again (dropship status shows what still fails)\n", prefix, resp.PostRetried)
	}
	waiting := slices.Clone(resp.Waiting)
	slices.SortFunc(waiting, func(x, y agent.TargetWaiting) int { return strings.Compare(x.Target, y.Target) })
	for _, t := range waiting {
		fmt.Fprintf(w, "%starget %s: its login was refused (%s); it is tried again at %s, when its backoff allows, not sooner\n", prefix, t.Target, t.Class, t.Next.Local().Format(time.RFC3339))
	}
}
