// Package jscluster runs a JetStream cluster of real nats-servers inside the
// test process, for the tests and benchmarks that must show what a fleet of
// agents sees when a node dies, a stream leader steps down or the whole
// cluster restarts. Every node listens on fixed loopback ports chosen at
// start, so a stopped node comes back where its peers and clients expect it,
// with its store.
package jscluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is a set of nats-servers routed to each other, with JetStream.
type Cluster struct {
	Name  string
	Nodes []*Node
}

// Node is one server of a Cluster; Stop and Start it as an outage would.
type Node struct {
	Name        string
	Port        int // clients
	ClusterPort int // routes
	StoreDir    string
	routes      []*url.URL
	cluster     string
	mu          sync.Mutex
	srv         *server.Server
}

// Start starts n nodes named n1…nN with their stores below dir and waits
// until JetStream answers (the cluster elected its meta leader). The test's
// cleanup stops them.
func Start(t testing.TB, n int, dir string) *Cluster {
	t.Helper()
	c := &Cluster{Name: "dropship-test"}
	for i := range n {
		c.Nodes = append(c.Nodes, &Node{
			Name:        fmt.Sprintf("n%d", i+1),
			Port:        freePort(t),
			ClusterPort: freePort(t),
			StoreDir:    filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			cluster:     c.Name,
		})
	}
	for _, nd := range c.Nodes {
		for _, o := range c.Nodes {
			if o != nd {
				nd.routes = append(nd.routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", o.ClusterPort)})
			}
		}
	}
	t.Cleanup(c.Stop)
	c.StartAll(t)
	return c
}

// URL lists every node, as a client's server list: nats://a,nats://b,….
func (c *Cluster) URL() string {
	u := make([]string, len(c.Nodes))
	for i, nd := range c.Nodes {
		u[i] = nd.URL()
	}
	return strings.Join(u, ",")
}

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	return nil
}

// Stop stops every node; idempotent.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, nd := range c.Nodes {
		wg.Go(nd.Stop)
	}
	wg.Wait()
}

// StartAll starts every stopped node (together, as a restarted cluster
// does) and waits until JetStream answers.
func (c *Cluster) StartAll(t testing.TB) {
	t.Helper()
	if err := c.StartNodes(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitJetStream(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// StartNodes starts every stopped node together and returns once each
// accepts connections, before JetStream has its leaders.
func (c *Cluster) StartNodes() error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, nd := range c.Nodes {
		wg.Go(func() { errs[i] = nd.start() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WaitJetStream waits until the cluster's JetStream API answers.
func (c *Cluster) WaitJetStream(timeout time.Duration) error {
	nc, err := nats.Connect(c.URL(), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("JetStream cluster %s did not answer within %s: %w", c.Name, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL is the node's client URL.
func (nd *Node) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", nd.Port) }

// Running reports whether the node is up.
func (nd *Node) Running() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.srv != nil
}

// Start starts the node again with its store, on its ports.
func (nd *Node) Start(t testing.TB) {
	t.Helper()
	if err := nd.start(); err != nil {
		t.Fatal(err)
	}
}

func (nd *Node) start() error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.srv != nil {
		return nil
	}
	opts := &server.Options{
		ServerName:            nd.Name,
		Host:                  "127.0.0.1",
		Port:                  nd.Port,
		NoLog:                 true,
		NoSigs:                true,
		DisableShortFirstPing: true,
		JetStream:             true,
		StoreDir:              nd.StoreDir,
		Cluster:               server.ClusterOpts{Name: nd.cluster, Host: "127.0.0.1", Port: nd.ClusterPort},
		Routes:                nd.routes,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats-server %s: %w", nd.Name, err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats-server %s did not accept connections on port %d within 20s", nd.Name, nd.Port)
	}
	nd.srv = srv
	return nil
}

// Stop shuts the node down, as a node's outage would; idempotent.
func (nd *Node) Stop() {
	nd.mu.Lock()
	srv := nd.srv
	nd.srv = nil
	nd.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// StreamLeader is the name of the server leading stream, as the JetStream
// API's stream info says; "" while it has none.
func StreamLeader(ctx context.Context, nc *nats.Conn, stream string) (string, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return "", fmt.Errorf("stream %s has no cluster information (not clustered?)", stream)
	}
	return info.Cluster.Leader, nil
}

// StepDown asks the leader of stream to step down
// ($JS.API.STREAM.LEADER.STEPDOWN.<stream>), as an operator's
// `nats stream cluster step-down` does.
func StepDown(nc *nats.Conn, stream string) error {
	m, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 5*time.Second)
	if err != nil {
		return fmt.Errorf("step down the leader of %s: %w", stream, err)
	}
	var resp struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return fmt.Errorf("step down the leader of %s: %w: %s", stream, err, m.Data)
	}
	if !resp.Success {
		desc := string(m.Data)
		if resp.Error != nil {
			desc = resp.Error.Description
		}
		return fmt.Errorf("step down the leader of %s: %s", stream, desc)
	}
	return nil
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
