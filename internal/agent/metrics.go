package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/watcher"
)

// metrics are the agent's Prometheus metrics and its /healthz and /readyz
// endpoints, served on agent.metrics_listen. Counters are updated as things
// happen; gauges are read from the agent's state at scrape time.
type metrics struct {
	a        *Agent
	reg      *prometheus.Registry
	outcomes *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	lastOK   *prometheus.GaugeVec
	watchErr *prometheus.CounterVec
	postErr  *prometheus.CounterVec

	srv  *http.Server
	done chan struct{}
	once sync.Once
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		a:   a,
		reg: prometheus.NewRegistry(),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dropship_transfers_total",
			Help: "Transfer attempts that ended, by target and outcome (completed, retrying, failed).",
		}, []string{"target", "outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dropship_transferred_bytes_total",
			Help: "Bytes of files delivered, by target.",
		}, []string{"target"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dropship_transfer_duration_seconds",
			Help:    "Duration of completed transfers, from the start of a file's upload to its confirmation.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10), // 10 ms to ~44 min
		}, []string{"target"}),
		lastOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dropship_last_success_timestamp_seconds",
			Help: "Unix time of the last completed transfer, by target.",
		}, []string{"target"}),
		watchErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dropship_watch_problems_total",
			Help: "Operational problems of watches (overflow, watch-limit, root-gone, ...), by watch and kind.",
		}, []string{"watch", "kind"}),
		postErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dropship_post_failures_total",
			Help: "Failed tries to archive, delete or move to failed_dir a file after its transfer, by watch and operation (archive, delete, failed-dir).",
		}, []string{"watch", "operation"}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "dropship_build_info",
		Help:        "Always 1; the labels tell the version and the Go version.",
		ConstLabels: prometheus.Labels{"version": a.opts.Version, "goversion": runtime.Version()},
	})
	info.Set(1)
	m.reg.MustRegister(m.outcomes, m.bytes, m.duration, m.lastOK, m.watchErr, m.postErr, info, stateCollector{a},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// listen serves the metrics on addr ("" for none).
func (m *metrics) listen(addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics_listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", m.readyz)
	// The server goroutine has its own copies: a reload's relisten
	// replaces m.srv and m.done while it runs.
	srv, done := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, make(chan struct{})
	m.srv, m.done = srv, done
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.a.logger.Error("metrics server stopped", "err", err)
		}
	}()
	m.a.logger.Info("serving metrics", "addr", ln.Addr().String())
	return nil
}

// readyz answers 200 when NATS is connected, every watch is watched, no
// target is failing for a reason that needs an operator and every delivered
// file was archived or deleted as `after` says; 503 otherwise. The body lists
// the problems as JSON either way; "degraded" is true when the agent still
// delivers and only post-processing fails (files delivered but left in the
// watch folder).
func (m *metrics) readyz(w http.ResponseWriter, _ *http.Request) {
	problems := m.a.readiness()
	degraded := m.a.degradations()
	all := append(problems, degraded...)
	w.Header().Set("Content-Type", "application/json")
	if len(all) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": len(all) == 0, "degraded": len(problems) == 0 && len(degraded) > 0, "problems": all})
}

func (m *metrics) close() {
	if m == nil || m.srv == nil {
		return
	}
	m.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = m.srv.Shutdown(ctx)
		<-m.done
	})
}

// outcome counts the end of an attempt.
func (m *metrics) outcome(target, outcome string, bytes int64, d time.Duration) {
	if m == nil {
		return
	}
	m.outcomes.WithLabelValues(target, outcome).Inc()
	if outcome == string(stateCompleted) {
		m.bytes.WithLabelValues(target).Add(float64(bytes))
		m.duration.WithLabelValues(target).Observe(d.Seconds())
		m.lastOK.WithLabelValues(target).SetToCurrentTime()
	}
}

func (m *metrics) watchProblem(watch string, kind watcher.Kind) {
	if m == nil {
		return
	}
	m.watchErr.WithLabelValues(watch, kind.String()).Inc()
}

func (m *metrics) postFailure(watch, op string) {
	if m == nil {
		return
	}
	m.postErr.WithLabelValues(watch, op).Inc()
}

// readiness lists what keeps the agent from doing its job.
func (a *Agent) readiness() []string {
	var problems []string
	if a.bus == nil || !a.bus.Connected() {
		problems = append(problems, "nats: not connected")
	} else if st := a.streamStatus(a.config().NATS.Stream); !st.Stored && st.CheckedAt != nil {
		problems = append(problems, "nats: lifecycle events cannot be stored: "+st.Problem+": "+st.Fix)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for path, e := range a.watchErrs {
		// Only a missing root stops a watch; the watcher clears it when
		// the root is back. Watch-limit and unreadable folders degrade to
		// polling and show in logs and dropship_watch_problems_total.
		if e.Kind == watcher.KindRootGone {
			problems = append(problems, "watch "+path+": "+e.Error())
		}
	}
	for name, t := range a.targets {
		if t.failClass != "" && !t.failClass.Retryable() {
			problems = append(problems, fmt.Sprintf("target %s: failing (%s): %s", name, t.failClass, t.failMsg))
		}
	}
	return problems
}

// degradations lists what the agent does not finish although it delivers:
// per watch, the files whose archive, delete or move to failed_dir failed.
func (a *Agent) degradations() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	type count struct {
		n     int
		first *postFailure
	}
	byWatch := map[string]*count{}
	for key, pf := range a.postFails {
		if a.recs[key] == nil {
			continue
		}
		c := byWatch[pf.Watch]
		if c == nil {
			c = &count{}
			byWatch[pf.Watch] = c
		}
		c.n++
		if c.first == nil || pf.Since.Before(c.first.Since) {
			c.first = pf
		}
	}
	var out []string
	for _, wc := range a.cfg.Watches {
		if c := byWatch[wc.Path]; c != nil {
			out = append(out, fmt.Sprintf("watch %s: %d file(s) delivered but not archived, deleted or moved (%s of %s: %s); see dropship status", wc.Path, c.n, c.first.Op, c.first.Path, c.first.Err))
		}
	}
	return append(out, a.sourceDegradations()...)
}

// stateCollector reports the gauges that are read from the agent's state.
type stateCollector struct{ a *Agent }

var (
	descQueued  = prometheus.NewDesc("dropship_queue_depth", "Files waiting to be sent (including retries not yet due), by target.", []string{"target"}, nil)
	descRunning = prometheus.NewDesc("dropship_transfers_running", "Files being sent now, by target.", []string{"target"}, nil)
	descFailed  = prometheus.NewDesc("dropship_files_failed", "Files in failed state, waiting for `dropship retry` or their target's recovery, by target.", []string{"target"}, nil)
	descFailing = prometheus.NewDesc("dropship_target_failing", "1 when the target's queue is held because of a target-wide failure.", []string{"target", "class"}, nil)
	descOutbox  = prometheus.NewDesc("dropship_outbox_depth", "Lifecycle events journaled but not yet acknowledged by JetStream.", nil, nil)
	descNATS    = prometheus.NewDesc("dropship_nats_connected", "1 when the NATS connection is up.", nil, nil)
	descDisc    = prometheus.NewDesc("dropship_nats_disconnects_total", "Times the NATS connection was lost.", nil, nil)
	descOldest  = prometheus.NewDesc("dropship_outbox_oldest_event_age_seconds", "Age of the oldest lifecycle event not yet acknowledged by JetStream; 0 when the outbox is empty.", nil, nil)
	descStored  = prometheus.NewDesc("dropship_events_stream_ok", "1 when the last check of the JetStream stream found that lifecycle events can be stored.", nil, nil)
	descRisk    = prometheus.NewDesc("dropship_watch_settle_only", "1 when the watch's readiness rests on the settle period alone for some files (no CAP_LEASE, a network file system): dropship status and the start log say why.", []string{"watch"}, nil)
	descPost    = prometheus.NewDesc("dropship_post_failed_files", "Files delivered (or failed for good) whose archive, delete or move to failed_dir failed and waits for its next try, by watch.", []string{"watch"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueued, descRunning, descFailed, descFailing, descOutbox, descNATS, descDisc, descOldest, descStored, descPost, descRisk} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	connected, disconnects := 0.0, 0.0
	if a.bus != nil {
		if a.bus.Connected() {
			connected = 1
		}
		disconnects = float64(a.bus.Disconnects())
	}
	ch <- prometheus.MustNewConstMetric(descNATS, prometheus.GaugeValue, connected)
	ch <- prometheus.MustNewConstMetric(descDisc, prometheus.CounterValue, disconnects)
	ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(a.journal.OutboxLen()))
	age := 0.0
	if t := a.outboxOldest(); !t.IsZero() {
		age = max(time.Since(t).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age)
	stored := 0.0
	if a.streamOK() {
		stored = 1
	}
	ch <- prometheus.MustNewConstMetric(descStored, prometheus.GaugeValue, stored)

	a.mu.Lock()
	defer a.mu.Unlock()
	queued, running, failed := map[string]int{}, map[string]int{}, map[string]int{}
	for _, rec := range a.recs {
		switch {
		case a.sending[rec.Key]:
			running[rec.Target]++
		case rec.State == journal.Queued:
			queued[rec.Target]++
		case rec.State == journal.Failed:
			failed[rec.Target]++
		}
	}
	for name, t := range a.targets {
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(queued[name]), name)
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(running[name]), name)
		ch <- prometheus.MustNewConstMetric(descFailed, prometheus.GaugeValue, float64(failed[name]), name)
		failing := 0.0
		if t.failClass != "" {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(descFailing, prometheus.GaugeValue, failing, name, string(t.failClass))
	}
	postFailed := map[string]int{}
	for key, pf := range a.postFails {
		if a.recs[key] != nil {
			postFailed[pf.Watch]++
		}
	}
	for _, wc := range a.cfg.Watches {
		ch <- prometheus.MustNewConstMetric(descPost, prometheus.GaugeValue, float64(postFailed[wc.Path]), wc.Path)
		risk := 0.0
		if ws := a.watches[wc.Path]; ws != nil && ws.risk != "" {
			risk = 1
		}
		ch <- prometheus.MustNewConstMetric(descRisk, prometheus.GaugeValue, risk, wc.Path)
	}
}
