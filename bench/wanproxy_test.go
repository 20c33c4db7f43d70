package bench

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// wanProxy is toxiproxy, in this process, between every client of the WAN
// benchmark and sshd: a TCP proxy from a free port of 127.0.0.1 to sshd's
// port, with a latency toxic on each direction (jitter 0). The delay is
// added above TCP, on loopback sockets: a long fat pipe with no bandwidth
// limit and no loss, in which only the round trips the protocols themselves
// wait for cost time (TCP's slow start and congestion window play no part).
type wanProxy struct {
	proxy *toxiproxy.Proxy
	port  int
}

// The toxics' names, one per direction: upstream is client → sshd,
// downstream sshd → client.
var wanDirections = []string{"upstream", "downstream"}

// startWANProxy starts the proxy to upstream ("127.0.0.1:port"), with no
// delay yet; it is stopped by t.Cleanup. Only loopback addresses are
// accepted, on either side.
func startWANProxy(t testing.TB, upstream string) *wanProxy {
	t.Helper()
	if host, _, err := net.SplitHostPort(upstream); err != nil || host != "127.0.0.1" {
		t.Fatalf("the WAN proxy only forwards to 127.0.0.1, not %q (%v)", upstream, err)
	}
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(server, "sshd", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	host, port, err := net.SplitHostPort(p.Listen)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("toxiproxy listens on %q (%v), want 127.0.0.1", p.Listen, err)
	}
	x := &wanProxy{proxy: p}
	if x.port, err = strconv.Atoi(port); err != nil {
		t.Fatal(err)
	}
	for _, dir := range wanDirections {
		spec := fmt.Sprintf(`{"name": "latency_%s", "type": "latency", "stream": %q, "toxicity": 1, "attributes": {"latency": 0, "jitter": 0}}`, dir, dir)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
			t.Fatalf("add the %s latency toxic: %v", dir, err)
		}
	}
	return x
}

// setLatency sets the delay of each direction (the round trip is twice
// oneWay). It applies to open connections too; the benchmark restarts the
// agent after it anyway, so that every phase starts alike.
func (x *wanProxy) setLatency(oneWay time.Duration) error {
	ms := oneWay.Milliseconds()
	if time.Duration(ms)*time.Millisecond != oneWay {
		return fmt.Errorf("toxiproxy's latency is in whole milliseconds, not %s", oneWay)
	}
	for _, dir := range wanDirections {
		spec := fmt.Sprintf(`{"toxicity": 1, "attributes": {"latency": %d, "jitter": 0}}`, ms)
		if _, err := x.proxy.Toxics.UpdateToxicJson("latency_"+dir, strings.NewReader(spec)); err != nil {
			return fmt.Errorf("set the %s latency to %s: %w", dir, oneWay, err)
		}
	}
	return nil
}

// TestWANProxyAddsLatency runs with every `go test ./bench`: a round trip
// through the proxy to an echo server on loopback takes twice the one-way
// delay, and changing the delay applies to an open connection.
func TestWANProxyAddsLatency(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	x := startWANProxy(t, ln.Addr().String())
	roundTrip := func(c net.Conn) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo through the proxy: %q, %v", buf, err)
		}
		return time.Since(start)
	}
	// Each latency on a connection of its own: toxiproxy v2.5.0 races
	// (under -race) when a toxic of an open connection is updated.
	for _, oneWay := range []time.Duration{20 * time.Millisecond, 60 * time.Millisecond} {
		if err := x.setLatency(oneWay); err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(x.port))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(c)
		if rtt := roundTrip(c); rtt < 2*oneWay || rtt > 2*oneWay+250*time.Millisecond {
			t.Errorf("round trip at %s each way took %s, want about %s", oneWay, rtt, 2*oneWay)
		}
		c.Close()
	}
	if err := x.setLatency(1500 * time.Microsecond); err == nil {
		t.Errorf("setLatency(1.5ms) = nil, want an error (toxiproxy counts whole milliseconds)")
	}
}
