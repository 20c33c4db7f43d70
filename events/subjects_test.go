package events

import (
	"slices"
	"strings"
	"testing"
)

func TestSubjects(t *testing.T) {
	s := Subjects{Prefix: "dropship", Agent: "edge-01"}
	multi := Subjects{Prefix: "acme.prod.dropship", Agent: "edge-01"}
	for _, tc := range []struct{ got, want string }{
		{s.Transfer("acme", TransferQueued), "dropship.edge-01.acme.transfer.queued"},
		{s.Transfer("acme", TransferCompleted), "dropship.edge-01.acme.transfer.completed"},
		{s.Progress("acme"), "dropship.edge-01.acme.progress"},
		{s.Log("acme"), "dropship.edge-01.acme.log"},
		{s.AgentEvent(AgentStarted), "dropship.edge-01.agent.started"},
		{s.Control(ControlStatus), "dropship.edge-01.ctl.status"},
		{s.Control(ControlRetry), "dropship.edge-01.ctl.retry"},
		{s.Source(), "/dropship/edge-01"},
		{multi.Transfer("acme", TransferFailed), "acme.prod.dropship.edge-01.acme.transfer.failed"},
		{multi.AgentEvent(AgentStopping), "acme.prod.dropship.edge-01.agent.stopping"},
		{TransferRetrying.Type(), TypeTransferRetrying},
		{AgentReloaded.Type(), TypeAgentReloaded},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if got, want := AllLifecycle("dropship"), []string{"dropship.*.*.transfer.*", "dropship.*.agent.*"}; !slices.Equal(got, want) {
		t.Errorf("AllLifecycle = %q, want %q", got, want)
	}
}

// TestSubjectsMatchOnlyTheirKind checks, with NATS wildcard semantics, that the
// lifecycle subjects capture every lifecycle and agent subject and nothing
// else, for a multi-token prefix too.
func TestSubjectsMatchOnlyTheirKind(t *testing.T) {
	for _, prefix := range []string{"dropship", "acme.prod.dropship"} {
		s := Subjects{Prefix: prefix, Agent: "edge-01"}
		var lifecycle, other []string
		for _, target := range []string{"acme", "globex", "progress", "transfer", "log"} {
			for _, st := range TransferStates {
				lifecycle = append(lifecycle, s.Transfer(target, st))
			}
			other = append(other, s.Progress(target), s.Log(target))
		}
		for _, st := range AgentStates {
			lifecycle = append(lifecycle, s.AgentEvent(st))
		}
		other = append(other, s.Control(ControlStatus), s.Control(ControlRetry))
		matches := func(subj string) bool {
			return slices.ContainsFunc(AllLifecycle(prefix), func(p string) bool { return SubjectCovers(p, subj) })
		}
		for _, subj := range lifecycle {
			if !matches(subj) {
				t.Errorf("lifecycle subject %s is not captured", subj)
			}
		}
		for _, subj := range other {
			if matches(subj) {
				t.Errorf("%s is captured with the lifecycle events", subj)
			}
		}
	}
}

func TestFilterSubjects(t *testing.T) {
	for _, tc := range []struct {
		f    Filter
		want []string // "" means an error is expected
	}{
		{Filter{}, []string{"p.*.*.transfer.*", "p.*.agent.*"}},
		{Filter{Agent: "a1"}, []string{"p.a1.*.transfer.*", "p.a1.agent.*"}},
		{Filter{Target: "acme"}, []string{"p.*.acme.transfer.*"}},
		{Filter{Agent: "a1", Target: "acme", Type: "completed"}, []string{"p.a1.acme.transfer.completed"}},
		{Filter{Type: "transfer.failed"}, []string{"p.*.*.transfer.failed"}},
		{Filter{Type: "dev.dropship.transfer.failed"}, []string{"p.*.*.transfer.failed"}},
		{Filter{Type: "started"}, []string{"p.*.*.transfer.started"}},
		{Filter{Type: "agent.started"}, []string{"p.*.agent.started"}},
		{Filter{Type: TypeAgentError}, []string{"p.*.agent.error"}},
		{Filter{Type: "agent"}, []string{"p.*.agent.*"}},
		{Filter{Type: "transfer"}, []string{"p.*.*.transfer.*"}},
		{Filter{Type: "progress", Target: "acme"}, []string{"p.*.acme.progress"}},
		{Filter{Type: TypeLog}, []string{"p.*.*.log"}},
		{Filter{Type: "all"}, []string{"p.*.*.transfer.*", "p.*.*.progress", "p.*.*.log", "p.*.*.fetch.*", "p.*.agent.*"}},
		{Filter{Type: "all", Target: "acme"}, []string{"p.*.acme.transfer.*", "p.*.acme.progress", "p.*.acme.log", "p.*.acme.fetch.*"}},
		{Filter{Type: "fetch"}, []string{"p.*.*.fetch.*"}},
		{Filter{Type: "fetch.source-deleted", Target: "customer"}, []string{"p.*.customer.fetch.source-deleted"}},
		{Filter{Type: TypeFetchFailed}, []string{"p.*.*.fetch.failed"}},
		{Filter{Type: "fetch.exploded"}, nil},
		{Filter{Type: "agent", Target: "acme"}, nil},
		{Filter{Type: "agent.started", Target: "acme"}, nil},
		{Filter{Type: "agent.exploded"}, nil},
		{Filter{Type: "exploded"}, nil},
	} {
		got, err := tc.f.Subjects("p")
		if tc.want == nil {
			if err == nil {
				t.Errorf("%+v: got %q, want an error", tc.f, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%+v: got %q, %v; want %q", tc.f, got, err, tc.want)
		}
	}
}

func TestCheckNames(t *testing.T) {
	for _, tc := range []struct {
		check func(string) error
		name  string
		ok    bool
	}{
		{CheckToken, "edge-01", true},
		{CheckToken, "EDGE_01", true},
		{CheckToken, "", false},
		{CheckToken, "edge.01", false},
		{CheckToken, "edge*", false},
		{CheckToken, "edge>", false},
		{CheckToken, "edge 01", false},
		{CheckToken, "edge\t01", false},
		{CheckTarget, "acme", true},
		{CheckTarget, "agent", false},
		{CheckTarget, "ctl", false},
		{CheckPrefix, "dropship", true},
		{CheckPrefix, "acme.prod.dropship", true},
		{CheckPrefix, "", false},
		{CheckPrefix, "acme..dropship", false},
		{CheckPrefix, "dropship.>", false},
		{CheckPrefix, ".dropship", false},
	} {
		err := tc.check(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("check %q: err = %v, want ok = %v", tc.name, err, tc.ok)
		}
	}
	if err := CheckTarget("ctl"); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("CheckTarget(ctl) = %v: want it to say the name is reserved", err)
	}
}

func TestSubjectCovers(t *testing.T) {
	for _, tc := range []struct {
		pattern, sub string
		want         bool
	}{
		{"a.b", "a.b", true},
		{"a.*", "a.b", true},
		{"a.*", "a.*", true},
		{"a.*", "a.b.c", false},
		{"a.>", "a.b.c", true},
		{"a.>", "a", false},
		{"a.b", "a.*", false},
		{"a.*.c", "a.b.d", false},
		{">", "dropship.*.agent.*", true},
		{"a.*", "a.>", false},
		{"a.>", "a.*", true},
		{"a.>", "a.b.>", true},
		{"a.b.>", "a.>", false},
	} {
		if got := SubjectCovers(tc.pattern, tc.sub); got != tc.want {
			t.Errorf("SubjectCovers(%q, %q) = %v, want %v", tc.pattern, tc.sub, got, tc.want)
		}
	}
}
