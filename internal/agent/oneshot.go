package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/transfer"
)

// Client builds the transfer client of the configured target name, for
// commands that work without a running agent (check -connect, hostkey,
// send). Its shared-connection socket lives in a private temporary folder
// that cleanup removes.
func Client(cfg *config.Config, name string, opts Options) (c *transfer.Client, t transfer.Target, cleanup func(), err error) {
	tc := cfg.Target(name)
	if s := cfg.Source(name); tc == nil && s != nil {
		tc = &s.Conn
	}
	if tc == nil {
		return nil, t, nil, fmt.Errorf("no target named %q in %s", name, cfg.File)
	}
	a, _ := New(cfg, opts)
	t, err = a.transferTarget(cfg, tc)
	if err != nil {
		return nil, t, nil, fmt.Errorf("target %s: %w", name, err)
	}
	dir, err := os.MkdirTemp("", "dropship-")
	if err != nil {
		return nil, t, nil, err
	}
	a.ctlDir = dir
	topts := a.clientOptions(cfg, tc)
	topts.OnConnectionLine = nil
	c, err = transfer.NewClient(t, topts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, t, nil, err
	}
	return c, t, func() {
		c.Close()
		os.RemoveAll(dir)
		// A key accepted (accept-new) by a command run as root stays
		// usable by the service.
		for _, kh := range t.KnownHosts {
			if _, err := os.Stat(kh); err == nil && strings.HasPrefix(kh, cfg.Agent.StateDir+string(filepath.Separator)) {
				followOwner(kh, cfg.Agent.StateDir)
			}
		}
	}, nil
}

// HostKeyTarget is the configured target name as `dropship hostkey` needs it:
// where to connect and with which ssh options, without reading any secret
// (fetching a host key logs in to nothing).
func HostKeyTarget(cfg *config.Config, name string) (transfer.Target, error) {
	tc := cfg.Target(name)
	if tc == nil {
		return transfer.Target{}, fmt.Errorf("no target named %q in %s", name, cfg.File)
	}
	noSecrets := *tc
	noSecrets.PasswordFile, noSecrets.PassphraseFile, noSecrets.IdentityFile = "", "", ""
	a, _ := New(cfg, Options{})
	return a.transferTarget(cfg, &noSecrets)
}

// SendResult is the outcome of one file of Send.
type SendResult struct {
	File       string
	RemotePath string
	Err        error
}

// Send pushes files once to the target name, through the same engine as the
// agent, and publishes their lifecycle events to NATS when it can reach it
// (nats.url, or a running agent's embedded server). It does not touch the
// journal, the watch folders or the source files.
func Send(ctx context.Context, cfg *config.Config, name string, files []string, opts Options) ([]SendResult, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	client, tt, cleanup, err := Client(cfg, name, opts)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	tc := cfg.Target(name)
	subj := events.Subjects{Prefix: cfg.NATS.SubjectPrefix, Agent: cfg.Agent.Name}
	bus := sendBus(ctx, cfg, opts.Logger)
	if bus != nil {
		defer bus.Close()
	}
	publish := func(state events.TransferState, d events.Transfer) {
		if bus == nil {
			return
		}
		ev, err := events.NewTransfer(subj, state, d)
		if err != nil {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := bus.PublishDurable(pctx, ev); err != nil {
			// One failure is enough to know: do not hold up the files
			// with a timeout per event.
			opts.Logger.Warn("events are not published", "state", state, "err", err)
			bus.Close()
			bus = nil
		}
	}

	var items []transfer.Item
	results := make([]SendResult, len(files))
	base := make([]events.Transfer, len(files))
	for i, f := range files {
		abs, err := filepath.Abs(f)
		results[i].File = f
		if err == nil {
			// The file is opened once; the engine reads (and hashes)
			// only this descriptor.
			var fh *os.File
			var fi os.FileInfo
			if fh, err = os.Open(abs); err == nil {
				defer fh.Close()
				if fi, err = fh.Stat(); err == nil && !fi.Mode().IsRegular() {
					err = fmt.Errorf("%s is not a regular file", f)
				}
			}
			if err == nil {
				rel := filepath.Base(abs)
				results[i].RemotePath = transfer.RemotePath(tc.RemoteDir, rel)
				base[i] = events.Transfer{
					TransferID: newID(), Attempt: 1, Agent: subj.Agent,
					Target:    events.TargetRef{Name: tt.Name, Host: tt.Host, Port: tt.Port},
					LocalPath: abs, RemotePath: results[i].RemotePath, SizeBytes: fi.Size(),
				}
				items = append(items, transfer.Item{ID: base[i].TransferID, File: fh, Local: abs, RemoteDir: tc.RemoteDir, Rel: rel, Size: fi.Size()})
				continue
			}
		}
		results[i].Err = &transfer.Error{Class: transfer.ClassLocalFile, Message: err.Error(), ExitCode: -1}
	}
	if len(items) == 0 {
		return results, nil
	}
	start := time.Now()
	for i := range base {
		if results[i].Err == nil {
			d := base[i]
			d.StartedAt = &start
			publish(events.TransferStarted, d)
		}
	}
	out := client.Upload(ctx, items, transfer.Observer{})
	byID := map[string]transfer.Result{}
	for _, r := range out {
		byID[r.ID] = r
	}
	for i := range base {
		if results[i].Err != nil {
			continue
		}
		r := byID[base[i].TransferID]
		d := base[i]
		d.SHA256 = r.SHA256
		if r.Start.IsZero() {
			r.Start = start
		}
		if r.End.IsZero() {
			r.End = time.Now()
		}
		d.StartedAt, d.FinishedAt = &r.Start, &r.End
		code := r.ExitCode
		d.ExitCode = &code
		if secs := r.End.Sub(r.Start).Seconds(); secs > 0 {
			d.DurationSeconds, d.BytesPerSecond = secs, float64(d.SizeBytes)/secs
		}
		if r.Err != nil {
			results[i].Err = r.Err
			var te *transfer.Error
			msg := r.Err.Error()
			if errors.As(r.Err, &te) {
				msg = te.Message
			}
			d.Error = &events.ErrorInfo{Class: string(transfer.ClassOf(r.Err)), Message: msg}
			publish(events.TransferFailed, d)
			continue
		}
		publish(events.TransferCompleted, d)
	}
	return results, nil
}

// sendBus connects to nats.url, or to a running agent's embedded server; nil
// when neither answers (the send goes on without events).
func sendBus(ctx context.Context, cfg *config.Config, logger *slog.Logger) *events.Bus {
	url := NATSURL(cfg)
	auth, err := NATSAuth(cfg)
	if err != nil {
		logger.Warn("events are not published", "nats", url, "err", err)
		return nil
	}
	bus, err := events.Connect(ctx, events.ConnectOptions{URL: url, Auth: auth, Name: "dropship send", Logger: logger})
	if err != nil {
		logger.Warn("events are not published", "nats", url, "err", err)
		return nil
	}
	bus.SetCloudEventsMode(cfg.NATS.CloudEventsMode)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := bus.WaitConnected(wctx); err != nil {
		logger.Warn("events are not published: NATS does not answer", "nats", url)
		bus.Close()
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := bus.CheckStream(sctx, StreamSetupOf(cfg, cfg.NATS.AutoCreateStream, false))
	switch {
	case err != nil:
		logger.Warn("could not check the event stream", "stream", cfg.NATS.Stream, "err", err)
	case !c.OK():
		logger.Error("lifecycle events cannot be stored: "+c.Problem, "fix", c.Fix, "stream", cfg.NATS.Stream)
	default:
		bus.ExpectStream(cfg.NATS.Stream)
	}
	return bus
}
