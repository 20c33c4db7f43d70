package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/internal/config"
)

// natsFlags are the flags that find a NATS server and an agent: a config
// file, or -nats and -agent given directly. stream has no flag here;
// commands that need it register their own.
type natsFlags struct {
	file, url, agent, prefix, creds, stream string
	auth                                    events.Auth // from the config's [nats]; -creds replaces it
}

func (n *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.file, "c", DefaultConfig, "configuration `file` (for the NATS server, subject prefix and agent name)")
	fs.StringVar(&n.url, "nats", "", "NATS server `URL` (instead of the config's)")
	fs.StringVar(&n.agent, "agent", "", "agent `name` (instead of the config's)")
	fs.StringVar(&n.prefix, "prefix", "", "subject `prefix` (instead of the config's)")
	fs.StringVar(&n.creds, "creds", "", "NATS credentials `file` (instead of the config's)")
}

// resolve fills what was not given from the config file. The file is only
// needed when something is missing.
func (n *natsFlags) resolve(stderr io.Writer, needAgent bool) error {
	if n.url != "" && n.prefix != "" && (n.agent != "" || !needAgent) {
		return nil
	}
	cfg, err := loadConfig(n.file, stderr)
	if err != nil {
		if n.url == "" {
			return fmt.Errorf("%w (or give -nats URL and -agent NAME)", err)
		}
		cfg = config.Default()
	}
	if n.url == "" {
		n.url = agent.NATSURL(cfg)
		if n.creds == "" {
			if n.auth, err = agent.NATSAuth(cfg); err != nil {
				return err
			}
			n.creds = n.auth.CredentialsFile
		}
	}
	if n.agent == "" {
		n.agent = cfg.Agent.Name
	}
	if n.prefix == "" {
		n.prefix = cfg.NATS.SubjectPrefix
	}
	if n.stream == "" {
		n.stream = cfg.NATS.Stream
	}
	return nil
}

func (n *natsFlags) connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("dropship cli"), nats.Timeout(5 * time.Second)}
	auth, err := n.natsAuth()
	if err != nil {
		return nil, err
	}
	opts = append(opts, auth...)
	nc, err := nats.Connect(n.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (is the agent running? is -nats right?)", n.url, err)
	}
	return nc, nil
}

// request asks the agent's control service and decodes its answer.
func (n *natsFlags) request(ctx context.Context, endpoint string, body, out any) error {
	nc, err := n.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	subj := events.Subjects{Prefix: n.prefix, Agent: n.agent}.Control(endpoint)
	err = ask(ctx, nc, n.agent, subj, body, out)
	var na *noAnswer
	if errors.As(err, &na) {
		if pd := permissionDenied(nc); pd != nil {
			return pd
		}
		return fmt.Errorf("%w%s", err, n.otherAgents(ctx, nc))
	}
	return err
}

// noAnswer: no agent answers on the subject asked.
type noAnswer struct{ agent, subj string }

func (e *noAnswer) Error() string {
	return fmt.Sprintf("no agent %q answers on %s: is it running, and are -agent and the subject prefix right?", e.agent, e.subj)
}

// serviceError is an error the agent's control service answered with.
type serviceError struct {
	agent, code, msg string
}

func (e *serviceError) Error() string { return fmt.Sprintf("agent %q: %s", e.agent, e.msg) }

// ask sends body to the control endpoint subj of agent name and decodes
// its answer into out. An agent that answers with an error gives a
// *serviceError; no answer at all, a *noAnswer.
func ask(ctx context.Context, nc *nats.Conn, name, subj string, body, out any) error {
	data, _ := json.Marshal(body)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, subj, data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
			return &noAnswer{agent: name, subj: subj}
		}
		return fmt.Errorf("ask agent %q: %w", name, err)
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		return &serviceError{agent: name, code: code, msg: msg.Header.Get("Nats-Service-Error")}
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("agent %q sent an answer dropship cannot read: %w", name, err)
	}
	return nil
}

func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "[-c FILE | -nats URL] [-agent NAME | -all] [-json]", stderr)
	var n natsFlags
	n.register(fs)
	all := fs.Bool("all", false, "ask every agent on the NATS server (under the subject prefix) and list them all (also -agent '*')")
	asJSON := fs.Bool("json", false, "print the agent's answer as JSON (with -all, a list of them)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("status takes no arguments, got %q", fs.Args())
	}
	fleet, err := n.wantAll(*all)
	if err != nil {
		return err
	}
	if err := n.resolve(stderr, !fleet); err != nil {
		return err
	}
	if fleet {
		return fleetStatus(ctx, &n, stdout, *asJSON)
	}
	var st agent.Status
	if err := n.request(ctx, events.ControlStatus, struct{}{}, &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st)
	return nil
}

func printStatus(w io.Writer, st agent.Status) {
	nats := "connected"
	if !st.NATSConnected {
		nats = "DISCONNECTED"
	}
	fmt.Fprintf(w, "agent %s on host %s (dropship %s), up %s, NATS %s, %s\n", st.Agent, orDash(st.Host), st.Version, time.Since(st.StartedAt).Round(time.Second), nats, outboxSummary(st))
	printStream(w, st)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tSTATE\tQUEUED\tRUNNING\tFAILED\tDETAIL")
	for _, t := range st.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", t.Name, strings.ToUpper(t.State), t.Queued, t.Running, t.Failed, targetDetail(t))
	}
	tw.Flush()
	if len(st.Watches) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "WATCH\tTARGET\tPROBLEM")
		for _, wt := range st.Watches {
			var problems []string
			if wt.Problem != "" {
				problems = append(problems, wt.Problem)
			}
			if wt.PostFailed > 0 {
				problems = append(problems, fmt.Sprintf("POST-FAILED %d: delivered but not archived, deleted or moved (below)", wt.PostFailed))
			}
			if wt.Risk != "" {
				problems = append(problems, "RISK: "+wt.Risk)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", wt.Path, wt.Target, strings.Join(problems, "; "))
		}
		tw.Flush()
	}
	if len(st.Sources) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SOURCE\tFOLDER\tTARGETS\tLAST LISTING\tSPOOLED\tPROBLEM")
		for _, s := range st.Sources {
			last := "-"
			if s.LastPoll != nil {
				last = s.LastPoll.Local().Format(time.RFC3339)
			}
			problem := s.Error
			if s.Held {
				problem = "HELD until fixed, then systemctl reload dropship or dropship retry: " + problem
			}
			fmt.Fprintf(tw, "%s\t%s:%q\t%s\t%s\t%d\t%s\n", s.Name, s.Host, s.RemoteDir, strings.Join(s.Targets, ","), last, s.Spooled, problem)
		}
		tw.Flush()
	}
	if len(st.PostFailed) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DELIVERED, NOT ARCHIVED/DELETED (fix, then dropship retry ID)\tFILE\tTARGET\tOPERATION\tATTEMPTS\tSINCE\tNEXT TRY\tERROR")
		for _, f := range st.PostFailed {
			fmt.Fprintf(tw, "%s\t%q\t%s\t%s\t%d\t%s\t%s\t%s\n", f.ID, f.Path, f.Target, f.Operation, f.Attempts, f.Since.Local().Format(time.RFC3339), f.NextTry.Local().Format(time.RFC3339), f.Error)
		}
		tw.Flush()
	}
	if len(st.Failed) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "FAILED (dropship retry ID)\tFILE\tTARGET\tCLASS\tATTEMPTS\tSINCE\tERROR")
		for _, f := range st.Failed {
			fmt.Fprintf(tw, "%s\t%q\t%s\t%s\t%d\t%s\t%s\n", f.ID, f.Path, f.Target, f.Class, f.Attempts, f.Since.Local().Format(time.RFC3339), f.Error)
		}
		tw.Flush()
	}
}

func retryCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("retry", "[-c FILE | -nats URL] [-agent NAME | -all] (ID | -failed)", stderr)
	var n natsFlags
	n.register(fs)
	failed := fs.Bool("failed", false, "send every failed file again (of the configuration's agent, -agent's, or with -all every agent's)")
	all := fs.Bool("all", false, "ask every agent on the NATS server (under the subject prefix); an ID without -agent does so too (also -agent '*')")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	req := agent.RetryRequest{Failed: *failed}
	switch {
	case *failed && fs.NArg() == 0:
	case !*failed && fs.NArg() == 1:
		req.ID = fs.Arg(0)
	default:
		fs.Usage()
		return usagef("retry needs a transfer id (or the file's path), or -failed")
	}
	fleet, err := n.wantAll(*all)
	if err != nil {
		return err
	}
	// The agent that owns a transfer id is found by asking them all,
	// unless -agent names it.
	fleet = fleet || (req.ID != "" && n.agent == "")
	if err := n.resolve(stderr, !fleet); err != nil {
		return err
	}
	if fleet {
		return fleetRetry(ctx, &n, req, stdout, stderr)
	}
	var resp agent.RetryResponse
	if err := n.request(ctx, events.ControlRetry, req, &resp); err != nil {
		return err
	}
	printRetry(stdout, "", resp)
	return nil
}
