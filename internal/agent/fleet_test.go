package agent

import (
	"slices"
	"testing"
	"time"

	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/dropship/dropship/events"
)

// controlLike registers a micro service as an agent's control service
// registers itself: name, metadata and the status endpoint's subject.
func controlLike(t *testing.T, nc *nats.Conn, service, prefix, name, host string) {
	t.Helper()
	svc, err := micro.AddService(nc, micro.Config{
		Name:     service,
		Version:  "1.0.0",
		Metadata: map[string]string{MetaAgent: name, MetaHost: host, MetaPrefix: prefix},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	subj := events.Subjects{Prefix: prefix, Agent: name}.Control(events.ControlStatus)
	if err := svc.AddEndpoint(events.ControlStatus, micro.HandlerFunc(func(req micro.Request) { _ = req.RespondJSON(Status{Agent: name}) }), micro.WithEndpointSubject(subj)); err != nil {
		t.Fatal(err)
	}
}

// TestDiscover finds every control service under one subject prefix, both
// instances of a name taken twice, and none of another prefix or another
// service; with no service at all it returns at once.
func TestDiscover(t *testing.T) {
	opts := natstest.DefaultTestOptions
	opts.Port = -1
	srv := natstest.RunServer(&opts)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	start := time.Now()
	found, err := Discover(t.Context(), nc, "dropship", 5*time.Second)
	if err != nil || len(found) != 0 {
		t.Fatalf("Discover with no service: %v, %v", found, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Discover with no service took %s: no responders should end it at once", d)
	}

	controlLike(t, nc, events.ServiceName, "dropship", "edge-b", "vm-b")
	controlLike(t, nc, events.ServiceName, "dropship", "edge-a", "vm-a")
	controlLike(t, nc, events.ServiceName, "dropship", "edge-a", "vm-clone")
	controlLike(t, nc, events.ServiceName, "acme.prod", "edge-c", "vm-c")
	controlLike(t, nc, "billing", "dropship", "edge-d", "vm-d")

	found, err = Discover(t.Context(), nc, "dropship", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range found {
		got = append(got, in.Agent+"@"+in.Host)
		if in.ID == "" || in.Version != "1.0.0" {
			t.Errorf("instance %+v: no id or version", in)
		}
	}
	if want := []string{"edge-a@vm-a", "edge-a@vm-clone", "edge-b@vm-b"}; !slices.Equal(got, want) {
		t.Errorf("Discover under dropship: %v, want %v", got, want)
	}
	found, err = Discover(t.Context(), nc, "acme.prod", 5*time.Second)
	if err != nil || len(found) != 1 || found[0].Agent != "edge-c" {
		t.Errorf("Discover under acme.prod: %+v, %v; want edge-c alone", found, err)
	}
	if s := found[0].Control("acme.prod", events.ControlRetry); s != "acme.prod.edge-c.ctl.retry" {
		t.Errorf("Control: %s", s)
	}
}
