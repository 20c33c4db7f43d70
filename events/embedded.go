package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embeddedStartTimeout bounds how long StartEmbedded waits for the server,
// which includes recovering the JetStream store.
const embeddedStartTimeout = 30 * time.Second

// EmbeddedConfig configures [StartEmbedded].
type EmbeddedConfig struct {
	// Listen is the client address, e.g. "127.0.0.1:4222"; port 0 picks a
	// free port. The server has no authentication: keep it on loopback.
	Listen string
	// StoreDir holds the JetStream store; it is created (mode 0700) if
	// missing.
	StoreDir string
	// Logger receives the server's own log: notices at Debug, warnings and
	// errors at their level. nil discards them.
	Logger *slog.Logger
}

// Embedded is a nats-server running in this process with JetStream enabled.
// It listens only on the configured client address: no cluster, gateway,
// leaf node, websocket or monitoring port. JetStream syncs every write to
// disk, so an acknowledged event survives a power loss.
type Embedded struct {
	srv  *server.Server
	url  string
	once sync.Once
}

// StartEmbedded starts an embedded nats-server and returns once it accepts
// clients. A busy address is reported as such, with what to change.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded NATS: no JetStream store directory")
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: listen address %q: %w; set nats.embedded_listen to host:port", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded NATS: listen address %q: bad port; set nats.embedded_listen to host:port", cfg.Listen)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		log.Warn("embedded NATS listens beyond loopback and has no authentication", "listen", cfg.Listen)
	}
	if port != 0 {
		// nats-server reports a listen error only as a log line; try the
		// address first to give the operator a clear message.
		if err := probeListen(cfg.Listen); err != nil {
			return nil, err
		}
	} else {
		port = server.RANDOM_PORT
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded NATS: JetStream store: %w", err)
	}

	opts := &server.Options{
		ServerName: "dropship-embedded",
		Host:       host,
		Port:       port,
		NoSigs:     true,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	logger := &serverLogger{log: log.With("component", "nats-server"), fatal: make(chan string, 1)}
	srv.SetLoggerV2(logger, false, false, false)
	go srv.Start()

	deadline := time.Now().Add(embeddedStartTimeout)
	for !srv.ReadyForConnections(100 * time.Millisecond) {
		select {
		case msg := <-logger.fatal:
			shutdown(srv)
			return nil, fmt.Errorf("embedded NATS on %s failed to start: %s; set nats.embedded_listen to a free address or nats.url to an external server",
				cfg.Listen, msg)
		default:
		}
		if time.Now().After(deadline) {
			shutdown(srv)
			return nil, fmt.Errorf("embedded NATS on %s not ready after %s; check the log and the store in %s", cfg.Listen, embeddedStartTimeout, cfg.StoreDir)
		}
	}
	if !srv.JetStreamEnabled() {
		shutdown(srv)
		return nil, fmt.Errorf("embedded NATS: JetStream did not start; check the store in %s", cfg.StoreDir)
	}
	e := &Embedded{srv: srv, url: clientURL(srv)}
	log.Debug("embedded NATS ready", "url", e.url, "store", cfg.StoreDir)
	return e, nil
}

func probeListen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var se *os.SyscallError
		if errors.As(err, &se) {
			err = se.Err // "address already in use", without the op noise
		}
		return fmt.Errorf("embedded NATS cannot listen on %s: %w; set nats.embedded_listen to a free address or nats.url to an external server", addr, err)
	}
	return ln.Close()
}

func shutdown(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}

// clientURL is the server's client URL, with an unspecified listen address
// (0.0.0.0, ::) replaced by loopback.
func clientURL(srv *server.Server) string {
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		return srv.ClientURL()
	}
	ip := addr.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
		if addr.IP.To4() == nil {
			ip = net.IPv6loopback
		}
	}
	u := url.URL{Scheme: "nats", Host: net.JoinHostPort(ip.String(), strconv.Itoa(addr.Port))}
	return u.String()
}

// ClientURL is the URL clients connect to, e.g. "nats://127.0.0.1:4222".
func (e *Embedded) ClientURL() string { return e.url }

// Close shuts the server down and waits until it has stopped. It is safe to
// call more than once.
func (e *Embedded) Close() {
	e.once.Do(func() { shutdown(e.srv) })
}

// serverLogger routes nats-server's log to slog: its chatty notices at
// Debug, warnings and errors at their own level. A fatal error, after which
// the server does not start, is also handed to StartEmbedded.
type serverLogger struct {
	log   *slog.Logger
	fatal chan string
}

func (l *serverLogger) logf(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if l.log.Enabled(ctx, level) {
		l.log.Log(ctx, level, fmt.Sprintf(format, v...))
	}
}

func (l *serverLogger) Noticef(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.logf(slog.LevelWarn, format, v) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.logf(slog.LevelDebug-4, format, v) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.logf(slog.LevelDebug-8, format, v) }

func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
