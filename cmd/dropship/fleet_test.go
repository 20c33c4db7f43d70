package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/agent"
)

// TestWantAll: -all and -agent '*' ask every agent; a name is checked as a
// subject token, and a pattern or -all with a name is refused naming -all.
func TestWantAll(t *testing.T) {
	for _, c := range []struct {
		agent   string
		all     bool
		want    bool
		wantErr bool
	}{
		{"", false, false, false},
		{"edge-01", false, false, false},
		{"", true, true, false},
		{"*", false, true, false},
		{"*", true, true, false},
		{"edge-01", true, false, true},
		{"edge-*", false, false, true},
		{">", false, false, true},
		{"a.b", false, false, true},
	} {
		n := natsFlags{agent: c.agent}
		got, err := n.wantAll(c.all)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("-agent %q -all=%v: %v, %v; want %v, error %v", c.agent, c.all, got, err, c.want, c.wantErr)
		}
		if err != nil && (exitCode(err) != 2 || !strings.Contains(err.Error(), "-all")) {
			t.Errorf("-agent %q -all=%v: %v: want a usage error naming -all", c.agent, c.all, err)
		}
	}
}

// TestPrintFleet: status -all shows a row per target of every agent, an
// agent that did not answer, one without targets, the instances of a name
// that two agents answer for, and every agent's failed files with the
// agent's name.
func TestPrintFleet(t *testing.T) {
	now := time.Now()
	fleet := []fleetEntry{
		{Status: agent.Status{Agent: "edge-a", Host: "vm-a", Version: "1.2.0", StartedAt: now, NATSConnected: true,
			Targets: []agent.TargetStatus{{Name: "acme", State: "ok", Queued: 3}, {Name: "backup", State: "failing", Class: "auth", Error: "password refused", Failed: 1}},
			Failed:  []agent.FileStatus{{ID: "id-1", Path: "/srv/drop/x.csv", Target: "backup", Class: "auth", Attempts: 1, Since: now}},
		}},
		{Status: agent.Status{Agent: "edge-b", Host: "vm-b", Version: "1.2.0", StartedAt: now, OutboxDepth: 7},
			Instances: []agent.Instance{{Agent: "edge-b", Host: "vm-b", ID: "ID1"}, {Agent: "edge-b", Host: "vm-c", ID: "ID2"}}},
		{Status: agent.Status{Agent: "edge-c", Host: "vm-d", Version: "1.1.0"}, Error: `no agent "edge-c" answers`},
	}
	var b bytes.Buffer
	printFleet(&b, fleet)
	out := b.String()
	for _, want := range []string{
		"AGENT", "POST-FAILED",
		"edge-a  vm-a",
		"acme", "backup", "FAILING", "auth: password refused",
		"DISCONNECTED", "no targets",
		"vm-b (+1 more: see below)",
		"agent edge-b: 2 instances answer for this name, on hosts vm-b (instance ID1), vm-c (instance ID2)",
		"NO ANSWER", `no agent "edge-c" answers`,
		"FAILED (dropship retry ID)", "id-1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status -all output has no %q:\n%s", want, out)
		}
	}
	// The second target of edge-a leaves the agent's columns empty.
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "backup") && !strings.Contains(line, "id-1") && strings.Contains(line, "edge-a") {
			t.Errorf("the second target's row repeats the agent: %q", line)
		}
	}
}
