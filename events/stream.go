package events

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// MinServerVersion is the oldest nats-server dropship works with: it needs
// JetStream's publish acknowledgements, message-id deduplication and the
// consumer API of 2.9 (Debian 12 ships 2.9.10). Nothing dropship does needs a
// newer server: `dropship events -since` uses one consumer per subject filter
// instead of 2.10's multi-filter consumers.
const MinServerVersion = "2.9.0"

// StreamSetup says which JetStream stream stores dropship's lifecycle events
// and what dropship may do to it.
type StreamSetup struct {
	// Name of the stream (nats.stream).
	Name string
	// Subjects the stream must capture: [AllLifecycle] of the prefix.
	Subjects []string
	// Create creates the stream when it is missing (nats.auto_create_stream,
	// or the embedded server). An existing stream is never changed.
	Create bool
	// Replicas of a stream dropship creates (nats.stream_replicas); 0 is 1.
	Replicas int
	// MaxBytes, MaxAge and Duplicates size a stream dropship creates
	// (nats.stream_max_bytes, stream_max_age, duplicate_window); 0 is
	// [StreamMaxBytes], [StreamMaxAge], [StreamDuplicateWindow]. Cluster
	// and Tags place it (nats.stream_cluster, stream_tags).
	MaxBytes   int64
	MaxAge     time.Duration
	Duplicates time.Duration
	Cluster    string
	Tags       []string
	// Owned is set for dropship's own embedded server: subjects the stream
	// does not capture yet (a new subject_prefix) are added to it. On any
	// other server the operator owns the stream and a missing subject is
	// reported instead.
	Owned bool
}

// duplicates is the duplicate window s asks for.
func (s StreamSetup) duplicates() time.Duration { return cmp.Or(s.Duplicates, StreamDuplicateWindow) }

// StreamCheck is what [Bus.CheckStream] found.
type StreamCheck struct {
	Stream        string // the stream's name
	ServerVersion string // the nats-server's version, e.g. "2.10.24"
	// Created is set when CheckStream created the stream; Missing when it
	// does not exist and was not to be created.
	Created, Missing bool
	// Problem, when not empty, is why lifecycle events cannot be stored
	// now; Fix says what the operator should do about it.
	Problem, Fix string
	// Warnings are problems that do not stop events from being stored (a
	// server older than MinServerVersion, a short duplicate window), each
	// with what to do.
	Warnings []string
	// Subjects and DuplicateWindow are the stream's, when it exists.
	Subjects        []string
	DuplicateWindow time.Duration
	Replicas        int
}

// OK reports whether events can be stored.
func (c StreamCheck) OK() bool { return c.Problem == "" }

// Err is nil when events can be stored, else the problem and its fix.
func (c StreamCheck) Err() error {
	if c.OK() {
		return nil
	}
	return fmt.Errorf("%s: %s", c.Problem, c.Fix)
}

// CheckStream checks the server and the stream as a target is checked before
// use: the server's version (at least [MinServerVersion]), that JetStream is
// enabled, that the stream exists (with s.Create it is created when missing),
// that it captures s.Subjects, and its duplicate window (at least
// [StreamDuplicateWindow], or republished events may be stored twice). The
// findings are in the StreamCheck; the error is set only when the server
// could not be asked at all (not connected, no answer before ctx ended).
//
// A JetStream request the NATS user may not make is not answered: the check
// ends as soon as the server reports the permissions violation, with the
// violation as its Problem, rather than when ctx does.
func (b *Bus) CheckStream(ctx context.Context, s StreamSetup) (c StreamCheck, err error) {
	c = StreamCheck{Stream: s.Name}
	ctx, stop := b.cancelOnDenied(ctx)
	defer stop()
	defer func() {
		var pd *PermissionDenied
		if err != nil && errors.As(context.Cause(ctx), &pd) {
			c.Problem = pd.Error()
			c.Fix = "grant the NATS user of the agent the permissions docs/nats-permissions.md lists"
			err = nil
		}
	}()
	if !b.nc.IsConnected() {
		return c, fmt.Errorf("check JetStream stream %s: %w", s.Name, ErrNotConnected)
	}
	c.ServerVersion = b.nc.ConnectedServerVersion()
	if !VersionAtLeast(c.ServerVersion, MinServerVersion) {
		c.Warnings = append(c.Warnings, fmt.Sprintf("nats-server %s is older than %s, the oldest dropship supports: upgrade the NATS server", c.ServerVersion, MinServerVersion))
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			c.Problem = "JetStream is not enabled on the NATS server (or for this account), so no lifecycle event can be stored"
			c.Fix = "enable it: start nats-server with -js (or a jetstream {} block in its configuration), or enable JetStream for the account dropship logs in as"
			return c, nil
		}
		return c, fmt.Errorf("check JetStream on the NATS server: %w", err)
	}
	stream, err := b.js.Stream(ctx, s.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if !s.Create {
			c.Missing = true
			c.Problem = fmt.Sprintf("JetStream stream %s does not exist, so no lifecycle event can be stored", s.Name)
			c.Fix = "set auto_create_stream = true in [nats], or create it: " + AddStreamCommand(s)
			return c, nil
		}
		cfg := streamConfig(s)
		if _, err := b.js.CreateStream(ctx, cfg); err != nil {
			if ctx.Err() != nil {
				return c, fmt.Errorf("create JetStream stream %s: %w", s.Name, err)
			}
			c.Problem = fmt.Sprintf("cannot create JetStream stream %s for %s: %v", s.Name, strings.Join(s.Subjects, " "), err)
			c.Fix = createFix(err, s)
			return c, nil
		}
		b.log.Info("created JetStream stream", logKeyStream, s.Name, "subjects", s.Subjects, "replicas", cfg.Replicas)
		c.Created = true
		c.Subjects, c.DuplicateWindow, c.Replicas = cfg.Subjects, cfg.Duplicates, cfg.Replicas
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("look up JetStream stream %s: %w", s.Name, err)
	}
	cfg := stream.CachedInfo().Config
	c.Subjects, c.DuplicateWindow, c.Replicas = cfg.Subjects, cfg.Duplicates, cfg.Replicas
	want := s.duplicates()
	if cfg.MaxAge > 0 {
		want = min(want, cfg.MaxAge) // no window outlives the events
	}
	if cfg.Duplicates < want {
		c.Warnings = append(c.Warnings, fmt.Sprintf("JetStream stream %s remembers message ids for %s only, and the outbox bridges outages of any length: events republished after a longer outage may be stored twice; raise it: %s",
			s.Name, cfg.Duplicates, shellCommand([]string{"nats", "stream", "edit", s.Name, "--dupe-window", durationFlag(want)})))
	}
	if cluster := b.nc.ConnectedClusterName(); cluster != "" && cfg.Replicas < 2 {
		c.Warnings = append(c.Warnings, fmt.Sprintf("the NATS server is part of cluster %s, but JetStream stream %s has one replica: while the server holding it is down, no event is stored; a stream's replicas cannot be changed in place by dropship: `nats stream edit %s --replicas 3`, or set nats.stream_replicas = 3 for a stream dropship creates",
			cluster, s.Name, s.Name))
	}
	if missing := uncovered(cfg.Subjects, s.Subjects); len(missing) > 0 {
		if s.Owned {
			cfg.Subjects = append(cfg.Subjects, missing...)
			if _, err := b.js.UpdateStream(ctx, cfg); err != nil {
				if ctx.Err() != nil {
					return c, fmt.Errorf("add subjects to JetStream stream %s: %w", s.Name, err)
				}
				c.Problem = fmt.Sprintf("cannot add %s to JetStream stream %s: %v", strings.Join(missing, " "), s.Name, err)
				c.Fix = "check the embedded server's log"
				return c, nil
			}
			b.log.Info("added subjects to JetStream stream", logKeyStream, s.Name, "subjects", missing)
			c.Subjects = cfg.Subjects
		} else {
			c.Problem = fmt.Sprintf("JetStream stream %s does not capture %s, so those lifecycle events cannot be stored", s.Name, strings.Join(missing, " "))
			c.Fix = "add them to the stream (dropship never changes a stream it did not create): " +
				shellCommand(append([]string{"nats", "stream", "edit", s.Name}, subjectFlags(append(slices.Clone(cfg.Subjects), missing...))...)) +
				", or set nats.stream to a stream that captures them"
			return c, nil
		}
	}
	return c, nil
}

// createFix says what to do when creating the stream failed.
func createFix(err error, s StreamSetup) string {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		desc := strings.ToLower(apiErr.Description)
		switch {
		case strings.Contains(desc, "overlap"):
			return "another stream already captures these subjects: set nats.stream to its name, or change nats.subject_prefix"
		case strings.Contains(desc, "replicas") || strings.Contains(desc, "insufficient resources") || strings.Contains(desc, "no suitable peers"):
			return "set nats.stream_replicas to at most the number of JetStream servers in the cluster, or create the stream yourself: " + AddStreamCommand(s)
		}
	}
	return "check the NATS account's permissions and JetStream limits, or create the stream yourself: " + AddStreamCommand(s)
}

// AddStreamCommand is the `nats stream add` command (of the NATS CLI) that
// creates the stream dropship would create for s.
func AddStreamCommand(s StreamSetup) string {
	cfg := streamConfig(s)
	args := []string{"nats", "stream", "add", s.Name}
	args = append(args, subjectFlags(cfg.Subjects)...)
	args = append(args,
		"--storage", "file", "--retention", "limits", "--discard", "old",
		"--max-age", durationFlag(cfg.MaxAge), "--max-bytes", strconv.FormatInt(cfg.MaxBytes, 10),
		"--dupe-window", durationFlag(cfg.Duplicates), "--replicas", strconv.Itoa(cfg.Replicas))
	if p := cfg.Placement; p != nil {
		if p.Cluster != "" {
			args = append(args, "--cluster", p.Cluster)
		}
		for _, t := range p.Tags {
			args = append(args, "--tag", t)
		}
	}
	args = append(args, "--defaults")
	return shellCommand(args)
}

func subjectFlags(subjects []string) []string {
	var args []string
	for _, s := range subjects {
		args = append(args, "--subjects", s)
	}
	return args
}

// durationFlag formats d as the NATS CLI reads it: "168h", "10m".
func durationFlag(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "h0m0s") {
		return strings.TrimSuffix(s, "0m0s")
	}
	if strings.HasSuffix(s, "m0s") {
		return strings.TrimSuffix(s, "0s")
	}
	return s
}

// shellCommand joins args into a command line a shell reads back as args:
// words with wildcards or other special characters are single-quoted.
func shellCommand(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,") == "" {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// uncovered returns the subjects of want that no pattern of have captures.
func uncovered(have, want []string) []string {
	var missing []string
	for _, s := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return SubjectCovers(h, s) }) {
			missing = append(missing, s)
		}
	}
	return missing
}

// VersionAtLeast reports whether the server version v (such as "2.9.10" or
// "2.11.0-RC.1") is min or newer. An empty or unreadable v is not.
func VersionAtLeast(v, min string) bool {
	a, ok := parseVersion(v)
	if !ok {
		return false
	}
	b, _ := parseVersion(min)
	return slices.Compare(a[:], b[:]) >= 0
}

func parseVersion(v string) ([3]int, bool) {
	var out [3]int
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, false
		}
		out[i] = n
	}
	return out, true
}
