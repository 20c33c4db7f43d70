package events

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// Connection tuning. A dead server is noticed within about
// pingInterval × (maxPingsOut+1); reconnect attempts then follow every
// reconnectWait plus up to reconnectJitter, forever.
const (
	reconnectWait   = time.Second
	reconnectJitter = time.Second
	pingInterval    = 15 * time.Second
	maxPingsOut     = 2
	flusherTimeout  = 5 * time.Second // bounds how long a publish can wait on a stuck socket
	closeTimeout    = 5 * time.Second // bounds Close's drain
)

// Stream settings used by [Bus.EnsureStream] when it creates a stream.
const (
	// StreamDuplicateWindow is how long JetStream remembers message ids to
	// drop a republished event (same Nats-Msg-Id): events wait in the
	// outbox through an outage of any length and are published again
	// after it, so the window covers a long one (a site offline over a
	// night). nats.duplicate_window changes it.
	StreamDuplicateWindow = 24 * time.Hour
	// StreamMaxAge is how long events are kept.
	StreamMaxAge = 7 * 24 * time.Hour
	// StreamMaxBytes caps the stream's size; the oldest events go first.
	StreamMaxBytes = 1 << 30
)

// OutageReportEvery is how often, by default, the log says that NATS is
// still unreachable: one WARN when the connection is lost, one when it is
// back, and this summary in between rather than a line per attempt.
const OutageReportEvery = 5 * time.Minute

// ErrNotConnected is returned (wrapped) by the publish methods while the
// connection to NATS is down.
var ErrNotConnected = errors.New("not connected to NATS")

// Log attribute keys.
const (
	logKeyURL    = "nats_url"
	logKeyErr    = "err"
	logKeyCount  = "disconnects"
	logKeyStream = "stream"
)

// ConnectOptions configure [Connect].
type ConnectOptions struct {
	// URL of the server, or several separated by commas.
	URL string
	// CredentialsFile is a NATS .creds file (user JWT and seed), read by path
	// on every (re)connect. The caller resolves credential:NAME. It is the
	// same as Auth.CredentialsFile.
	CredentialsFile string
	// Auth is how the connection logs in, and its TLS.
	Auth Auth
	// Waiting, if set, says how many events wait to be published (the
	// outbox), for the log lines of an outage.
	Waiting func() int
	// OutageReport is how often a summary is logged while the server stays
	// unreachable; 0 means every [OutageReportEvery].
	OutageReport time.Duration
	// Name is the connection name the server shows, e.g. "dropship edge-01".
	Name string
	// Logger receives connection state changes; nil discards them.
	Logger *slog.Logger
	// OnStateChange, if set, is called with true when the connection comes
	// up and false when it goes down (including on Close), in order, from
	// one goroutine; it must not block. It is not called after Close
	// returns.
	OnStateChange func(connected bool)
}

// Bus is dropship's connection to NATS: durable publishing through JetStream
// and best-effort publishing through core NATS. It is safe for concurrent
// use.
type Bus struct {
	binary  atomic.Bool // publish in the CloudEvents binary content mode
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	onState func(bool)
	waiting func() int

	// The outage being lived through; touched by nats.go's callbacks.
	outMu       sync.Mutex
	downSince   time.Time // zero while connected
	lastReport  time.Time
	reportEvery time.Duration
	seenErrs    map[string]bool // errors worth an ERROR, said once per outage
	denied      map[string]bool // permission violations said since connecting
	lastDenied  atomic.Pointer[PermissionDenied]
	wasDown     atomic.Bool   // an outage was logged: its end is logged too
	deniedSig   chan struct{} // closed and replaced at each permissions violation; under outMu

	disconnects atomic.Uint64
	drops       atomic.Uint64
	closing     atomic.Bool
	expect      atomic.Pointer[string] // see ExpectStream

	mu sync.Mutex
	up chan struct{} // closed while connected, replaced when the connection drops

	closed    chan struct{} // closed by nats.go's closed callback: no callback follows
	closeOnce sync.Once
}

// Connect returns a Bus connected to opts.URL. It does not wait for the
// server: when the server is not reachable yet, Connect still succeeds, and
// the connection comes up by itself once the server does (so do later
// reconnects, forever). Until then the publish methods fail with
// [ErrNotConnected]; [Bus.WaitConnected] waits for the connection. Messages
// are never buffered while disconnected (nats.go's reconnect buffer is off),
// so nothing is sent late behind the caller's back. ctx bounds only the setup;
// the connection lives until [Bus.Close].
func Connect(ctx context.Context, opts ConnectOptions) (*Bus, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	if opts.URL == "" {
		return nil, errors.New("connect to NATS: no server URL")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bus{
		log:     log.With(logKeyURL, redactURLs(opts.URL)),
		onState: opts.OnStateChange,
		waiting: opts.Waiting,
		up:      make(chan struct{}),
		closed:  make(chan struct{}),

		reportEvery: cmp.Or(opts.OutageReport, OutageReportEvery),
		deniedSig:   make(chan struct{}),
	}
	auth := opts.Auth
	if opts.CredentialsFile != "" {
		if auth.CredentialsFile != "" && auth.CredentialsFile != opts.CredentialsFile {
			return nil, errors.New("connect to NATS: two different credentials files")
		}
		auth.CredentialsFile = opts.CredentialsFile
	}
	authOpts, err := auth.options()
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	nopts := []nats.Option{
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
		nats.ReconnectBufSize(-1),
		nats.IgnoreAuthErrorAbort(),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.FlusherTimeout(flusherTimeout),
		nats.DrainTimeout(closeTimeout),
		nats.ConnectHandler(b.onConnect),
		nats.ReconnectHandler(b.onConnect),
		nats.DisconnectErrHandler(b.onDisconnect),
		nats.ReconnectErrHandler(b.onReconnectErr()),
		nats.ClosedHandler(b.onClosed),
		nats.ErrorHandler(b.onAsyncErr),
	}
	nopts = append(nopts, authOpts...)
	b.outMu.Lock()
	b.downSince, b.lastReport = time.Now(), time.Now()
	b.outMu.Unlock()
	nc, err := nats.Connect(opts.URL, nopts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(opts.URL), err)
	}
	// Asynchronous publishes (PublishDurableBatch) give up on an ack after
	// AckTimeout, so none waits forever for a stream leader that is gone.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(asyncWindow), jetstream.WithPublishAsyncTimeout(AckTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect to NATS at %s: jetstream: %w", redactURLs(opts.URL), err)
	}
	b.nc, b.js = nc, js
	if !nc.IsConnected() {
		b.wasDown.Store(true)
		b.log.Warn("not connected to NATS yet; retrying in the background", "err", cmp.Or(nc.LastError(), ErrNotConnected))
	}
	return b, nil
}

// checkCredentials reads a .creds file once, so that a missing or malformed
// file is reported at startup rather than as endless reconnect failures.
// nats.go reads it again on every connect.
func checkCredentials(path string) error {
	contents, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("NATS credentials file: %w; check nats.credentials_file", err)
	}
	defer clear(contents)
	kp, err := nkeys.ParseDecoratedNKey(contents) // as nats.go does
	if err != nil {
		return fmt.Errorf("NATS credentials file %s: %w; check nats.credentials_file", path, err)
	}
	kp.Wipe()
	return nil
}

// waitingCount is how many events wait, or -1 when nobody said.
func (b *Bus) waitingCount() int {
	if b.waiting == nil {
		return -1
	}
	return b.waiting()
}

// The log of an outage: one WARN when the connection is lost (or not there
// at start), one when it is back saying for how long it was down and how
// many events waited, and in between a summary every reportEvery; a failed
// attempt is a Debug line, unless its error is one an operator must fix
// (authorization, TLS), which is an ERROR once per outage.

func (b *Bus) onConnect(nc *nats.Conn) {
	b.outMu.Lock()
	since := b.downSince
	b.downSince, b.seenErrs, b.denied = time.Time{}, nil, nil
	b.outMu.Unlock()
	if since.IsZero() || !b.wasDown.Swap(false) {
		// The first connection, made at once.
		b.log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted())
	} else {
		attrs := []any{"server", nc.ConnectedUrlRedacted(), "down_for", time.Since(since).Round(time.Second).String()}
		msg := fmt.Sprintf("NATS is back after %s", roundDown(time.Since(since)))
		if n := b.waitingCount(); n >= 0 {
			msg += fmt.Sprintf("; %d events waited in the outbox", n)
			attrs = append(attrs, "outbox", n)
		}
		b.log.Warn(msg, attrs...)
	}
	b.setUp(true)
}

func (b *Bus) onDisconnect(_ *nats.Conn, err error) {
	if b.closing.Load() {
		return
	}
	n := b.disconnects.Add(1)
	b.outMu.Lock()
	if b.downSince.IsZero() {
		b.downSince, b.lastReport = time.Now(), time.Now()
	}
	b.outMu.Unlock()
	attrs := []any{logKeyErr, err, logKeyCount, n}
	if w := b.waitingCount(); w >= 0 {
		attrs = append(attrs, "outbox", w)
	}
	b.wasDown.Store(true)
	b.log.Warn("lost the connection to NATS; reconnecting in the background, events wait in the outbox", attrs...)
	b.setUp(false)
}

// roundDown shows d in whole seconds (tenths under a second).
func roundDown(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// maxSeenErrs bounds the distinct errors an outage logs at ERROR.
const maxSeenErrs = 8

// onReconnectErr logs a failed reconnect attempt at Debug, or at ERROR the
// first time an error an operator must fix comes up in an outage, and the
// outage's summary when it is due.
func (b *Bus) onReconnectErr() nats.ConnErrHandler {
	return func(_ *nats.Conn, err error) {
		if err == nil || b.closing.Load() {
			return
		}
		now := time.Now()
		b.outMu.Lock()
		if b.downSince.IsZero() {
			b.downSince, b.lastReport = now, now
		}
		since := b.downSince
		b.wasDown.Store(true)
		loud := false
		if fix := needsFix(err); fix {
			if b.seenErrs == nil {
				b.seenErrs = map[string]bool{}
			}
			if msg := err.Error(); !b.seenErrs[msg] && len(b.seenErrs) < maxSeenErrs {
				b.seenErrs[msg] = true
				loud = true
			}
		}
		report := now.Sub(b.lastReport) >= b.reportEvery
		if report {
			b.lastReport = now
		}
		b.outMu.Unlock()
		if loud {
			b.log.Error("NATS refuses the connection: check nats.url and the auth and TLS settings in [nats]", logKeyErr, err)
		} else {
			b.log.Debug("NATS reconnect attempt failed", logKeyErr, err)
		}
		if report {
			attrs := []any{logKeyErr, err, "down_for", now.Sub(since).Round(time.Second).String()}
			msg := fmt.Sprintf("NATS still unreachable for %s", roundDown(now.Sub(since)))
			if n := b.waitingCount(); n >= 0 {
				msg += fmt.Sprintf(", %d events waiting in the outbox", n)
				attrs = append(attrs, "outbox", n)
			}
			b.log.Warn(msg, attrs...)
		}
	}
}

// needsFix reports whether a connection error is one that waiting does not
// cure: the server refuses the login or the TLS handshake fails.
func needsFix(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrAccountAuthExpired) || errors.Is(err, nats.ErrTLS) || errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted) {
		return true
	}
	var (
		unknownAuth x509.UnknownAuthorityError
		hostname    x509.HostnameError
		invalid     x509.CertificateInvalidError
		verify      *tls.CertificateVerificationError
		alert       tls.AlertError
	)
	if errors.As(err, &unknownAuth) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify) || errors.As(err, &alert) {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "authorization") || strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:")
}

func (b *Bus) onClosed(*nats.Conn) {
	b.log.Debug("NATS connection closed")
	b.setUp(false)
	close(b.closed)
}

func (b *Bus) onAsyncErr(_ *nats.Conn, sub *nats.Subscription, err error) {
	if pd := AsPermissionDenied(err); pd != nil {
		b.lastDenied.Store(pd)
		b.outMu.Lock()
		close(b.deniedSig)
		b.deniedSig = make(chan struct{})
		key := pd.Op + " " + pd.Subject
		first := !b.denied[key] && len(b.denied) < 64
		if first {
			if b.denied == nil {
				b.denied = map[string]bool{}
			}
			b.denied[key] = true
		}
		b.outMu.Unlock()
		level := slog.LevelDebug
		if first {
			level = slog.LevelError
		}
		b.log.Log(context.Background(), level, pd.Error(), "op", pd.Op, "subject", pd.Subject)
		return
	}
	if sub != nil {
		b.log.Warn("NATS error", "subscription", sub.Subject, logKeyErr, err)
		return
	}
	b.log.Warn("NATS error", logKeyErr, err)
}

// setUp records the connection state reported by nats.go's callbacks, which
// all run on one goroutine, and tells OnStateChange when it changed.
func (b *Bus) setUp(connected bool) {
	b.mu.Lock()
	var was bool
	select {
	case <-b.up:
		was = true
		if !connected {
			b.up = make(chan struct{})
		}
	default:
		if connected {
			close(b.up)
		}
	}
	b.mu.Unlock()
	if b.onState != nil && was != connected {
		b.onState(connected)
	}
}

// cancelOnDenied returns ctx canceled, with the *PermissionDenied as its
// cause, once the server reports a permissions violation of a JetStream API
// request or of the inbox its answers come to: such a request is never
// answered, and waiting for ctx would only delay saying why. stop releases
// it.
func (b *Bus) cancelOnDenied(ctx context.Context) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		for {
			b.outMu.Lock()
			sig := b.deniedSig
			b.outMu.Unlock()
			select {
			case <-sig:
				if pd := b.lastDenied.Load(); pd != nil && (strings.HasPrefix(pd.Subject, "$JS.API.") || strings.HasPrefix(pd.Subject, "_INBOX.")) {
					cancel(pd)
					return
				}
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

// PermissionDenied is the last permissions violation the server reported on
// this connection, or nil.
func (b *Bus) PermissionDenied() *PermissionDenied { return b.lastDenied.Load() }

// Conn is the underlying connection, for subscribers and the control
// service. Do not close it; close the Bus.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Connected reports whether the connection is up now.
func (b *Bus) Connected() bool { return b.nc.IsConnected() }

// Disconnects counts the times an established connection was lost.
func (b *Bus) Disconnects() uint64 { return b.disconnects.Load() }

// Drops counts best-effort events that were not sent.
func (b *Bus) Drops() uint64 { return b.drops.Load() }

// WaitConnected returns nil once the connection is up, or ctx's error.
func (b *Bus) WaitConnected(ctx context.Context) error {
	for !b.nc.IsConnected() {
		b.mu.Lock()
		up := b.up
		b.mu.Unlock()
		select {
		case <-up:
			// The callback may lag behind the connection state; if it
			// says up but the connection is down again, wait a moment
			// for the disconnect callback instead of spinning.
			if !b.nc.IsConnected() {
				select {
				case <-time.After(10 * time.Millisecond):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		case <-b.closed:
			return nats.ErrConnectionClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// EnsureStream makes sure the JetStream stream name exists and captures
// subjects, on a server dropship owns (its embedded one): a missing stream is
// created with file storage, limits retention (kept [StreamMaxAge], at most
// [StreamMaxBytes], oldest discarded first), a duplicate window of
// [StreamDuplicateWindow] and one replica; subjects an existing stream does
// not capture yet are added to it, and its other settings are kept. For an
// operator's server, use [Bus.CheckStream], which never changes a stream.
func (b *Bus) EnsureStream(ctx context.Context, name string, subjects []string) error {
	c, err := b.CheckStream(ctx, StreamSetup{Name: name, Subjects: subjects, Create: true, Owned: true})
	if err != nil {
		return err
	}
	for _, w := range c.Warnings {
		b.log.Warn(w, logKeyStream, name)
	}
	return c.Err()
}

func streamConfig(s StreamSetup) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:        s.Name,
		Description: "dropship transfer and agent lifecycle events (CloudEvents)",
		Subjects:    slices.Clone(s.Subjects),
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cmp.Or(s.MaxAge, StreamMaxAge),
		MaxBytes:    cmp.Or(s.MaxBytes, StreamMaxBytes),
		Duplicates:  s.duplicates(),
		Replicas:    max(s.Replicas, 1),
	}
	// JetStream refuses a duplicate window longer than the age limit.
	cfg.Duplicates = min(cfg.Duplicates, cfg.MaxAge)
	if s.Cluster != "" || len(s.Tags) > 0 {
		cfg.Placement = &jetstream.Placement{Cluster: s.Cluster, Tags: slices.Clone(s.Tags)}
	}
	return cfg
}

// SubjectCovers reports whether every subject matching sub (a subject, or a
// pattern with wildcards) also matches pattern: "a.>" covers "a.*" and
// "a.b.>", "a.*" covers "a.b" but not "a.>".
func SubjectCovers(pattern, sub string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(sub, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || st[i] == ">" {
			return false
		}
		if p != "*" && p != st[i] {
			return false
		}
	}
	return len(pt) == len(st)
}

// PublishDurable publishes ev through JetStream and waits for the stream's
// acknowledgement. A nil error means the event is stored; an ack that says
// the id was already stored (a republished event) counts as stored too. Any
// other outcome is an error, and the caller keeps the event to try again:
// while disconnected it fails at once with [ErrNotConnected]; otherwise it
// waits at most until ctx is done (5 seconds when ctx has no deadline). A
// connection lost while waiting for the ack is not reported early: nats.go
// lets the request run to its deadline. The event may then have been stored
// all the same; republishing it is safe.
func (b *Bus) PublishDurable(ctx context.Context, ev Event) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("publish %s event %s: %w", ev.Type, ev.ID, ErrNotConnected)
	}
	msg, err := b.message(ev)
	if err != nil {
		return err
	}
	ack, err := b.js.PublishMsg(ctx, msg)
	if err != nil {
		return b.publishErr(ev, err)
	}
	return b.ackErr(ev, ack)
}

const (
	// AckTimeout is how long a published event waits for its JetStream
	// acknowledgement: long enough for a healthy cluster, short enough that
	// a lost ack (a leader change) costs little before the retry.
	AckTimeout = 2 * time.Second
	// asyncWindow bounds the asynchronous publishes awaiting their ack.
	asyncWindow = 512
)

// PublishDurableBatch publishes evs to JetStream all at once, without
// waiting for one ack before the next publish, and returns each event's
// outcome (nil: stored) once every ack arrived, AckTimeout passed or ctx
// ended. Each ack is matched to its own event; an event whose ack did not
// come is not stored, as far as the caller knows, and is published again
// later under the same id (JetStream drops the duplicate).
func (b *Bus) PublishDurableBatch(ctx context.Context, evs []Event) []error {
	errs := make([]error, len(evs))
	futs := make([]jetstream.PubAckFuture, len(evs))
	for i, ev := range evs {
		if !b.nc.IsConnected() {
			errs[i] = fmt.Errorf("publish %s event %s: %w", ev.Type, ev.ID, ErrNotConnected)
			continue
		}
		msg, err := b.message(ev)
		if err != nil {
			errs[i] = err
			continue
		}
		f, err := b.js.PublishMsgAsync(msg)
		if err != nil {
			errs[i] = b.publishErr(ev, err)
			continue
		}
		futs[i] = f
	}
	wait, cancel := context.WithTimeout(ctx, AckTimeout)
	defer cancel()
	for i, f := range futs {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			errs[i] = b.ackErr(evs[i], ack)
		case err := <-f.Err():
			errs[i] = b.publishErr(evs[i], err)
		case <-wait.Done():
			errs[i] = b.publishErr(evs[i], context.DeadlineExceeded)
		}
	}
	return errs
}

// publishErr says why publishing ev failed, in an operator's words.
func (b *Bus) publishErr(ev Event, err error) error {
	if errors.Is(err, nats.ErrReconnectBufExceeded) {
		err = ErrNotConnected // the connection dropped since the check above
	}
	if errors.Is(err, ErrNotConnected) {
		return fmt.Errorf("publish %s event %s: %w", ev.Type, ev.ID, err)
	}
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		return fmt.Errorf("publish %s event %s on %s: no JetStream stream answered: create a stream for this subject or set nats.auto_create_stream: %w",
			ev.Type, ev.ID, ev.NATSSubject, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
		// Someone answered the subject's interest (a core NATS subscriber,
		// say) but no stream acknowledged: the event is not stored.
		return fmt.Errorf("publish %s event %s on %s: no JetStream acknowledgement in time: the event is not stored; is there a stream for this subject? (a core NATS subscriber alone does not store it): %w",
			ev.Type, ev.ID, ev.NATSSubject, err)
	}
	if errors.Is(err, jetstream.ErrInvalidJSAck) {
		return fmt.Errorf("publish %s event %s on %s: the answer was not a JetStream acknowledgement (something other than a stream replied): the event is not stored: %w",
			ev.Type, ev.ID, ev.NATSSubject, err)
	}
	return fmt.Errorf("publish %s event %s on %s: %w", ev.Type, ev.ID, ev.NATSSubject, err)
}

// ackErr checks ev's acknowledgement: stored in the expected stream.
func (b *Bus) ackErr(ev Event, ack *jetstream.PubAck) error {
	if want := b.expect.Load(); want != nil && *want != "" && ack.Stream != *want {
		return fmt.Errorf("publish %s event %s on %s: stored in JetStream stream %s, not %s: set nats.stream to %s, or make %s the only stream capturing dropship's subjects",
			ev.Type, ev.ID, ev.NATSSubject, ack.Stream, *want, ack.Stream, *want)
	}
	if ack.Duplicate {
		b.log.Debug("JetStream already had the event", "id", ev.ID, logKeyStream, ack.Stream, "seq", ack.Sequence)
	}
	return nil
}

// ExpectStream makes [Bus.PublishDurable] accept only acknowledgements from
// the stream name ("" accepts any): an event stored in another stream is not
// where `dropship events -since` and the operator look for it.
func (b *Bus) ExpectStream(name string) { b.expect.Store(&name) }

// PublishBestEffort publishes ev through core NATS without waiting for
// anything. When the connection is down the event is dropped (counted in
// [Bus.Drops]) and an error wrapping [ErrNotConnected] is returned; it never
// waits for a reconnect. Only a connected but stuck socket can hold it, for at
// most a few seconds (the connection's write timeout), after which the
// connection is dropped and reconnected.
func (b *Bus) PublishBestEffort(ev Event) error {
	if !b.nc.IsConnected() {
		b.drops.Add(1)
		return fmt.Errorf("publish %s event %s: %w", ev.Type, ev.ID, ErrNotConnected)
	}
	msg, err := b.message(ev)
	if err != nil {
		b.drops.Add(1)
		return err
	}
	if err := b.nc.PublishMsg(msg); err != nil {
		b.drops.Add(1)
		if errors.Is(err, nats.ErrReconnectBufExceeded) {
			err = ErrNotConnected
		}
		return fmt.Errorf("publish %s event %s on %s: %w", ev.Type, ev.ID, ev.NATSSubject, err)
	}
	return nil
}

func (b *Bus) message(ev Event) (*nats.Msg, error) {
	if ev.NATSSubject == "" || ev.ID == "" {
		return nil, fmt.Errorf("publish %s event %q: event has no subject or id", ev.Type, ev.ID)
	}
	var msg *nats.Msg
	if b.binary.Load() {
		msg = binaryMessage(ev)
	} else {
		data, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("encode %s event %s: %w", ev.Type, ev.ID, err)
		}
		msg = nats.NewMsg(ev.NATSSubject)
		msg.Header.Set("Content-Type", StructuredContentType)
		msg.Data = data
	}
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	return msg, nil
}

// Replay calls fn, in order, for every event stored in stream on subjects
// during the last since (all of them when since <= 0), and returns once it
// has delivered what the stream held when Replay started. Messages that are
// not dropship events are skipped. It uses one ephemeral ordered consumer per
// subject (a consumer with several filter subjects needs nats-server 2.10,
// and Debian 12 ships 2.9) and merges what they deliver by stream sequence,
// so the order is the stream's; it acknowledges nothing.
func (b *Bus) Replay(ctx context.Context, stream string, subjects []string, since time.Duration, fn func(Event)) (err error) {
	// A request the user may not make is never answered: end at the
	// server's permissions violation, saying it.
	ctx, stop := b.cancelOnDenied(ctx)
	defer stop()
	defer func() {
		var pd *PermissionDenied
		if err != nil && errors.As(context.Cause(ctx), &pd) {
			err = fmt.Errorf("replay from JetStream stream %s: %w", stream, pd)
		}
	}()
	defer func() {
		// An older server than dropship supports may lack what a
		// replay uses: say so rather than leave the raw error.
		if v := b.nc.ConnectedServerVersion(); err != nil && v != "" && !VersionAtLeast(v, MinServerVersion) {
			err = fmt.Errorf("%w (nats-server %s is older than %s, the oldest dropship supports: upgrade the NATS server)", err, v, MinServerVersion)
		}
	}()
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("replay from JetStream stream %s: %w", stream, err)
	}
	state := s.CachedInfo().State
	if state.Msgs == 0 {
		return nil
	}
	base := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if since > 0 {
		start := time.Now().Add(-since)
		if state.LastTime.Before(start) {
			return nil
		}
		base.DeliverPolicy, base.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	var heads []*replayHead
	defer func() {
		for _, h := range heads {
			h.it.Stop()
		}
	}()
	for _, subj := range subjects {
		cfg := base
		cfg.FilterSubjects = []string{subj}
		h, err := openReplayHead(ctx, s, cfg)
		if err != nil {
			return fmt.Errorf("replay %s from JetStream stream %s: %w", subj, stream, err)
		}
		if h != nil {
			heads = append(heads, h)
		}
	}
	var last uint64
	for {
		var next *replayHead
		for _, h := range heads {
			if h.msg != nil && (next == nil || h.seq < next.seq) {
				next = h
			}
		}
		if next == nil {
			return nil
		}
		if next.seq > last { // overlapping filters deliver a message more than once
			last = next.seq
			if ev, err := ParseHeaders(next.msg.Headers(), next.msg.Data()); err != nil {
				b.log.Warn("skipping a message that is not a dropship event", logKeyStream, stream, "subject", next.msg.Subject(), logKeyErr, err)
			} else {
				ev.NATSSubject = next.msg.Subject()
				fn(ev)
			}
		}
		if err := next.advance(ctx); err != nil {
			return fmt.Errorf("replay from JetStream stream %s: %w", stream, err)
		}
	}
}

// replayHead is one ordered consumer of a replay and the next message it
// delivered (nil once it delivered what was pending when it started).
type replayHead struct {
	it  jetstream.MessagesContext
	msg jetstream.Msg
	seq uint64
}

func openReplayHead(ctx context.Context, s jetstream.Stream, cfg jetstream.OrderedConsumerConfig) (*replayHead, error) {
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	h := &replayHead{it: it}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		it.Stop()
		return nil, nil
	}
	if err := h.fetch(ctx); err != nil {
		it.Stop()
		return nil, err
	}
	return h, nil
}

// fetch reads the next message.
func (h *replayHead) fetch(ctx context.Context) error {
	m, err := h.it.Next(jetstream.NextContext(ctx))
	if err != nil {
		return err
	}
	md, err := m.Metadata()
	if err != nil {
		return err
	}
	h.msg, h.seq = m, md.Sequence.Stream
	if md.NumPending == 0 {
		// The last one: fetch must not be called again.
		h.it.Stop()
		h.it = stoppedMessages{h.it}
	}
	return nil
}

// advance moves past the current message.
func (h *replayHead) advance(ctx context.Context) error {
	if _, done := h.it.(stoppedMessages); done {
		h.msg = nil
		return nil
	}
	return h.fetch(ctx)
}

// stoppedMessages marks a replay head's iterator that delivered its last
// message (and is stopped already).
type stoppedMessages struct{ jetstream.MessagesContext }

func (stoppedMessages) Stop() {}

// Close drains the connection (pending messages are flushed, subscriptions
// finish their handlers) within a few seconds, then closes it and waits
// until nats.go's callbacks are done. It is safe to call more than once.
func (b *Bus) Close() {
	b.closeOnce.Do(func() {
		b.closing.Store(true)
		if err := b.nc.Drain(); err != nil {
			b.nc.Close()
		}
		select {
		case <-b.closed:
		case <-time.After(closeTimeout + time.Second):
			b.nc.Close()
			select {
			case <-b.closed:
			case <-time.After(time.Second):
				b.log.Warn("NATS connection did not report closing in time")
			}
		}
	})
}

// redactURLs returns the comma-separated server URLs in s with any password
// replaced, for logs and errors.
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			p = "nats://" + p // as nats.go reads a URL without a scheme
		}
		if u, err := url.Parse(p); err == nil && u.User != nil {
			if _, hasPass := u.User.Password(); hasPass {
				p = u.Redacted()
			} else {
				// A lone user part is a token: hide it too.
				u.User = url.User("xxxxx")
				p = u.String()
			}
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}
