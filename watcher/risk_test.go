package watcher

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestReadinessRisk: a process that cannot see other users' writers is told
// so, with what to do; one that can, or a watch with a ready marker, is not.
func TestReadinessRisk(t *testing.T) {
	root := t.TempDir()
	blind := Abilities{UID: 1000}
	risk := ReadinessRisk(root, 3*time.Second, "", blind)
	for _, want := range []string{"uid 1000", "CAP_LEASE", "settle (3s) alone", "half-written", "AmbientCapabilities=CAP_LEASE", "ready_marker", "raise settle"} {
		if !strings.Contains(risk, want) {
			t.Errorf("risk without CAP_LEASE does not say %q: %s", want, risk)
		}
	}
	for _, ab := range []Abilities{{UID: 1000, Lease: true}, {UID: 0, AllProcs: true}} {
		if risk := ReadinessRisk(root, time.Second, "", ab); risk != "" {
			t.Errorf("%+v: risk %q, want none", ab, risk)
		}
	}
	if risk := ReadinessRisk(root, time.Second, ".done", blind); risk != "" {
		t.Errorf("with a ready marker: risk %q, want none", risk)
	}
}

// TestSelfAbilities reads this process's own capabilities: root (as in CI)
// has CAP_LEASE.
func TestSelfAbilities(t *testing.T) {
	ab := SelfAbilities()
	if ab.UID != os.Geteuid() {
		t.Errorf("uid %d, want %d", ab.UID, os.Geteuid())
	}
	if os.Geteuid() == 0 && !ab.Lease {
		t.Logf("running as root without CAP_LEASE: %+v", ab)
	}
}
