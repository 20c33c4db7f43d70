package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// A second agent started with the name of a running one on the same NATS
// (cloned machines share the default name, the host name) refuses to start
// and says why, naming both hosts, and what to do, instead of sharing the
// control subject; the first keeps running and answers status, with its
// host.
func TestSecondAgentWithTheSameNameRefusesToStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()
	first := startAgent(t, e.cfg)

	// A clone: same name and NATS, its own folders.
	clone := newEnv(t)
	clone.conf = e.conf.clone()
	clone.conf.get("[agent]").set("state_dir", clone.state)
	clone.conf.get("[[watch]]").set("path", clone.watch)
	clone.writeConf()
	p := startProc(t, "run", "-c", clone.cfg)
	if code := p.wait(30 * time.Second); code == 0 {
		t.Fatalf("the second agent named %q exited 0:\n%s", agentName, p.logs())
	}
	// Both run here, so both hosts are this one.
	host, _ := os.Hostname()
	for _, want := range []string{fmt.Sprintf("another agent named %q runs on host %q", agentName, host), fmt.Sprintf("this one is on host %q", host), "[agent] name"} {
		if !strings.Contains(p.logs(), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, p.logs())
		}
	}
	if first.exited() {
		t.Fatal("the first agent stopped")
	}
	st := status(t, "-c", e.cfg)
	if st.Agent != agentName || st.Host != host {
		t.Errorf("status answered by %q on host %q", st.Agent, st.Host)
	}
	_ = n
}

// clone is a deep copy of c.
func (c *conf) clone() conf {
	var out conf
	for _, tb := range c.tables {
		cp := &table{header: tb.header, keys: append([]string(nil), tb.keys...), vals: map[string]string{}}
		for k, v := range tb.vals {
			cp.vals[k] = v
		}
		out.tables = append(out.tables, cp)
	}
	return out
}
