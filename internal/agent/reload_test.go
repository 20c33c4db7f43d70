package agent

import (
	"slices"
	"testing"

	"github.com/dropship/dropship/internal/config"
)

func TestSplitReload(t *testing.T) {
	running := config.Default()
	running.NATS.URL = "nats://a:4222"
	next := *running
	next.Agent.Name = "renamed"
	next.Agent.LogLevel = "debug"
	next.Agent.MetricsListen = "127.0.0.1:9469"
	next.NATS.URL = "nats://b:4222"
	next.NATS.AutoCreateStream = true
	next.NATS.StreamReplicas = 3
	next.Targets = []config.Target{config.DefaultTarget()}

	apply, restart, live := splitReload(running, &next, true)
	if want := []string{"agent.name", "nats.url"}; !slices.Equal(restart, want) {
		t.Errorf("restart keys %q, want %q", restart, want)
	}
	if want := []string{"agent.log_level", "agent.metrics_listen", "nats.auto_create_stream", "nats.stream_replicas", "[[target]]"}; !slices.Equal(live, want) {
		t.Errorf("live keys %q, want %q", live, want)
	}
	if apply.Agent.Name != running.Agent.Name || apply.NATS.URL != running.NATS.URL {
		t.Errorf("a restart key took its new value: name %q, url %q", apply.Agent.Name, apply.NATS.URL)
	}
	if apply.Agent.LogLevel != "debug" || !apply.NATS.AutoCreateStream || apply.NATS.StreamReplicas != 3 || len(apply.Targets) != 1 {
		t.Errorf("a live key kept its old value: %+v", apply)
	}

	// Without a level to change, log_level needs a restart too.
	_, restart, _ = splitReload(running, &next, false)
	if !slices.Contains(restart, "agent.log_level") {
		t.Errorf("restart keys without a live level: %q", restart)
	}
	if _, restart, live := splitReload(running, running, true); len(restart)+len(live) != 0 {
		t.Errorf("an unchanged file: restart %q, live %q", restart, live)
	}
}
