package agent

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/dropship/dropship/internal/config"
)

// restartKeys are the keys a running agent cannot change: its name and
// state_dir (subjects, journal), the log format (the handler), and how it
// reaches NATS (the connection, the embedded server, the subjects the
// control service and the stream use). A reload keeps their running values
// and names them.
var restartKeys = []struct {
	key  string
	copy func(dst, src *config.Config) // dst's value := src's
}{
	{"agent.name", func(d, s *config.Config) { d.Agent.Name = s.Agent.Name }},
	{"agent.state_dir", func(d, s *config.Config) { d.Agent.StateDir = s.Agent.StateDir }},
	{"agent.log_format", func(d, s *config.Config) { d.Agent.LogFormat = s.Agent.LogFormat }},
	{"nats.url", func(d, s *config.Config) { d.NATS.URL = s.NATS.URL }},
	{"nats.embedded_listen", func(d, s *config.Config) { d.NATS.EmbeddedListen = s.NATS.EmbeddedListen }},
	{"nats.subject_prefix", func(d, s *config.Config) { d.NATS.SubjectPrefix = s.NATS.SubjectPrefix }},
	{"nats.credentials_file", func(d, s *config.Config) { d.NATS.CredentialsFile = s.NATS.CredentialsFile }},
	{"nats.user", func(d, s *config.Config) { d.NATS.User = s.NATS.User }},
	{"nats.password_file", func(d, s *config.Config) { d.NATS.PasswordFile = s.NATS.PasswordFile }},
	{"nats.token_file", func(d, s *config.Config) { d.NATS.TokenFile = s.NATS.TokenFile }},
	{"nats.nkey_seed_file", func(d, s *config.Config) { d.NATS.NKeySeedFile = s.NATS.NKeySeedFile }},
	{"nats.tls_ca_file", func(d, s *config.Config) { d.NATS.TLSCAFile = s.NATS.TLSCAFile }},
	{"nats.tls_cert_file", func(d, s *config.Config) { d.NATS.TLSCertFile = s.NATS.TLSCertFile }},
	{"nats.tls_key_file", func(d, s *config.Config) { d.NATS.TLSKeyFile = s.NATS.TLSKeyFile }},
	{"nats.tls_server_name", func(d, s *config.Config) { d.NATS.TLSServerName = s.NATS.TLSServerName }},
}

// liveKeys are the other keys outside targets and watches; a reload applies
// them at once.
var liveKeys = []struct {
	key string
	get func(*config.Config) any
}{
	{"agent.log_level", func(c *config.Config) any { return c.Agent.LogLevel }},
	{"agent.metrics_listen", func(c *config.Config) any { return c.Agent.MetricsListen }},
	{"agent.shutdown_grace", func(c *config.Config) any { return c.Agent.ShutdownGrace }},
	{"nats.stream", func(c *config.Config) any { return c.NATS.Stream }},
	{"nats.auto_create_stream", func(c *config.Config) any { return c.NATS.AutoCreateStream }},
	{"nats.stream_replicas", func(c *config.Config) any { return c.NATS.StreamReplicas }},
	{"nats.publish_logs", func(c *config.Config) any { return c.NATS.PublishLogs }},
	{"nats.cloudevents_mode", func(c *config.Config) any { return c.NATS.CloudEventsMode }},
	{"nats.stream_max_bytes", func(c *config.Config) any { return c.NATS.StreamMaxBytes }},
	{"nats.stream_max_age", func(c *config.Config) any { return c.NATS.StreamMaxAge }},
	{"nats.duplicate_window", func(c *config.Config) any { return c.NATS.DuplicateWindow }},
	{"nats.stream_cluster", func(c *config.Config) any { return c.NATS.StreamCluster }},
	{"nats.stream_tags", func(c *config.Config) any { return c.NATS.StreamTags }},
}

// splitReload returns the configuration a reload can apply (next, with the
// running values of the restart keys), the restart keys that changed, and
// the live keys that changed (targets and watches included, by table).
func splitReload(running, next *config.Config, levelLive bool) (apply *config.Config, restart, live []string) {
	c := *next
	for _, k := range restartKeys {
		probe := c
		k.copy(&probe, running)
		if !reflect.DeepEqual(probe.Agent, c.Agent) || !reflect.DeepEqual(probe.NATS, c.NATS) {
			restart = append(restart, k.key)
			k.copy(&c, running)
		}
	}
	if !levelLive && c.Agent.LogLevel != running.Agent.LogLevel {
		restart = append(restart, "agent.log_level")
		c.Agent.LogLevel = running.Agent.LogLevel
	}
	for _, k := range liveKeys {
		if !reflect.DeepEqual(k.get(&c), k.get(running)) {
			live = append(live, k.key)
		}
	}
	if !reflect.DeepEqual(c.Targets, running.Targets) {
		live = append(live, "[[target]]")
	}
	if !reflect.DeepEqual(c.Watches, running.Watches) {
		live = append(live, "[[watch]]")
	}
	if !reflect.DeepEqual(c.Sources, running.Sources) {
		live = append(live, "[[source]]")
	}
	return &c, restart, live
}

// LevelOf is the slog level of agent.log_level.
func LevelOf(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// relisten moves the metrics endpoint to addr ("" for none). The old one is
// closed only once the new one listens; if the new address is taken (by the
// old listener itself, say, for 0.0.0.0 after 127.0.0.1 on the same port),
// the old one is closed first and the address tried again, and on failure
// the old address is served again. It returns the error for addr.
func (m *metrics) relisten(addr, old string) error {
	oldSrv, oldDone := m.srv, m.done
	m.srv, m.done = nil, nil
	stopOld := func() {
		if oldSrv == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = oldSrv.Shutdown(ctx)
		<-oldDone
		oldSrv = nil
	}
	err := m.listen(addr)
	if err == nil {
		stopOld()
		return nil
	}
	stopOld()
	if err2 := m.listen(addr); err2 == nil {
		return nil
	}
	if lerr := m.listen(old); lerr != nil {
		m.a.logger.Error("metrics endpoint lost", "metrics_listen", old, keyErr, lerr)
	}
	return err
}
