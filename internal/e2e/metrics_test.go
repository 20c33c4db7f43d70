package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
)

// scrape fetches /metrics and returns each sample line's value by its name
// and labels as written ("dropship_transfers_total{outcome=\"completed\",target=\"partner\"}").
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsAfterRealTransfers scrapes /metrics of the built agent after
// real transfers through the built-in server: the counters, the histogram
// and the gauges say what happened, named the Prometheus way; /healthz and
// /readyz reflect the agent's state, and readyz turns unready when the
// target fails for a reason that needs an operator.
func TestMetricsAfterRealTransfers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "s3cret")
	e.sftpdTarget("partner", srv, "alice", "s3cret")
	e.watchFor("partner")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	e.conf.get("[agent]").set("metrics_listen", addr)
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	agent.waitLog(20*time.Second, "agent started")

	sizes := []int{100, 2000, 30000}
	total := 0
	for i, size := range sizes {
		writeFile(t, filepath.Join(e.watch, fmt.Sprintf("m%d.bin", i)), randomBytes(t, size))
		total += size
	}
	eventually(t, 30*time.Second, "three completed events", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) == len(sizes)
	})

	// A subscriber can see an event before the agent has taken the ack and
	// emptied its outbox.
	var m map[string]float64
	eventually(t, 10*time.Second, "an empty outbox", func() bool {
		m = scrape(t, addr)
		return m["dropship_outbox_depth"] == 0
	})
	want := map[string]float64{
		`dropship_transfers_total{outcome="completed",target="partner"}`: 3,
		`dropship_transferred_bytes_total{target="partner"}`:             float64(total),
		`dropship_transfer_duration_seconds_count{target="partner"}`:     3,
		`dropship_queue_depth{target="partner"}`:                         0,
		`dropship_transfers_running{target="partner"}`:                   0,
		`dropship_nats_connected`:                                        1,
		`dropship_outbox_depth`:                                          0,
	}
	for k, v := range want {
		got, ok := m[k]
		if !ok {
			t.Errorf("metric %s missing", k)
			continue
		}
		if got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	if ts := m[`dropship_last_success_timestamp_seconds{target="partner"}`]; time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last success timestamp %v is not recent", ts)
	}
	found := false
	for k, v := range m {
		if strings.HasPrefix(k, "dropship_build_info{") && v == 1 {
			found = true
		}
	}
	if !found {
		t.Error("dropship_build_info missing")
	}
	if code, body := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %s", code, body)
	}
	if code, body := get(t, "http://"+addr+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %s, want 200 while everything works", code, body)
	}

	// The server starts refusing writes: retries are counted, and once the
	// target is failing for a reason an operator must fix, readyz says so.
	srv.SetFaults(sftpd.Faults{DenyWrite: true})
	writeFile(t, filepath.Join(e.watch, "denied.bin"), randomBytes(t, 10))
	eventually(t, 30*time.Second, "a failing target in /readyz", func() bool {
		code, body := get(t, "http://"+addr+"/readyz")
		var r struct {
			Ready    bool     `json:"ready"`
			Problems []string `json:"problems"`
		}
		_ = json.Unmarshal([]byte(body), &r)
		return code == http.StatusServiceUnavailable && !r.Ready && len(r.Problems) > 0 && strings.Contains(strings.Join(r.Problems, " "), "partner")
	})
	m = scrape(t, addr)
	if m[`dropship_transfers_total{outcome="failed",target="partner"}`]+m[`dropship_transfers_total{outcome="retrying",target="partner"}`] < 1 {
		t.Errorf("no failed or retrying attempt counted: %v", m)
	}
	if m[`dropship_target_failing{class="remote-permission",target="partner"}`] != 1 {
		t.Errorf("dropship_target_failing for remote-permission not 1")
	}
}
