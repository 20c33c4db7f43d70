package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/dropship/dropship/events"
)

// Instance is one running agent's control service, as [Discover] finds it.
type Instance struct {
	Agent string `json:"agent"`
	Host  string `json:"host,omitempty"` // "" for an agent that does not publish it
	// ID is the micro service instance's id (`nats micro info dropship ID`).
	ID      string `json:"id"`
	Version string `json:"version"`
}

// Control is the subject of endpoint (such as [events.ControlStatus]) of
// this instance's agent under prefix.
func (i Instance) Control(prefix, endpoint string) string {
	return events.Subjects{Prefix: prefix, Agent: i.Agent}.Control(endpoint)
}

// DiscoverQuiet is how long [Discover] waits for another answer after the
// last one: the gathering window, as `nats micro ls` has it.
const DiscoverQuiet = 300 * time.Millisecond

// Discover asks every dropship control service on nc for its description
// (the micro service discovery, $SRV.INFO.dropship) and returns the agents
// under prefix, sorted by name and host. It gathers answers until none came
// for [DiscoverQuiet], waiting at most timeout for the first; when no
// service is subscribed at all, it returns at once with none. Two instances
// with one name (a clone started before the name check could see the
// other) are both returned.
func Discover(ctx context.Context, nc *nats.Conn, prefix string, timeout time.Duration) ([]Instance, error) {
	subj, err := micro.ControlSubject(micro.InfoVerb, events.ServiceName, "")
	if err != nil {
		return nil, err
	}
	// A synchronous subscription: its pending limit (nats.go's default,
	// 512Ki messages) holds the answers of a large fleet arriving at once.
	sub, err := nc.SubscribeSync(nc.NewRespInbox())
	if err != nil {
		return nil, fmt.Errorf("discover agents: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subj, sub.Subject, nil); err != nil {
		return nil, fmt.Errorf("discover agents: %w", err)
	}
	var out []Instance
	seen := map[string]bool{}
	for wait := timeout; ; wait = DiscoverQuiet {
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil || m.Header.Get("Status") == "503" {
			break // quiet for the window, or no responders: no agent runs
		}
		in, ok := instanceOf(m.Data, prefix)
		if ok && !seen[in.ID] {
			seen[in.ID] = true
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(x, y Instance) int {
		if c := strings.Compare(x.Agent, y.Agent); c != 0 {
			return c
		}
		return strings.Compare(x.Host, y.Host)
	})
	return out, nil
}

// instanceOf reads one $SRV.INFO answer; it is an agent under prefix when
// its status endpoint sits on that agent's control subject.
func instanceOf(data []byte, prefix string) (Instance, bool) {
	var info micro.Info
	if json.Unmarshal(data, &info) != nil || info.Type != micro.InfoResponseType || info.Name != events.ServiceName {
		return Instance{}, false
	}
	in := Instance{Agent: info.Metadata[MetaAgent], Host: info.Metadata[MetaHost], ID: info.ID, Version: info.Version}
	if in.Agent == "" {
		return Instance{}, false
	}
	for _, ep := range info.Endpoints {
		if ep.Name == events.ControlStatus && ep.Subject == in.Control(prefix, events.ControlStatus) {
			return in, true
		}
	}
	return Instance{}, false
}
