package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/dropship/dropship/internal/sftpd"
)

// stampedScreen records what a terminal received, with the time of each
// read.
type stampedScreen struct {
	mu     sync.Mutex
	all    []byte
	chunks []stamped
}

type stamped struct {
	at   time.Time
	data string
}

func (s *stampedScreen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, p...)
	s.chunks = append(s.chunks, stamped{time.Now(), string(p)})
	return len(p), nil
}

func (s *stampedScreen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.all)
}

// sample is a byte count at a time.
type sample struct {
	at    time.Time
	bytes int64
}

// before returns the last sample at or before t (zero bytes if none).
func before(samples []sample, t time.Time) int64 {
	var b int64
	for _, s := range samples {
		if s.at.After(t) {
			break
		}
		b = s.bytes
	}
	return b
}

// A progress bar in `dropship events` follows the bytes: at every moment of
// a real transfer (an agent sending to the built-in SFTP server, slowed
// down), the bar shows at least what the server had received half a second
// before.
func TestProgressBarsFollowTheBytes(t *testing.T) {
	const size = 12 << 20 // one file, below the size that is striped over sessions
	dir := t.TempDir()
	drop, remote, state := filepath.Join(dir, "drop"), filepath.Join(dir, "remote"), filepath.Join(dir, "state")
	for _, d := range []string{drop, remote, state} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := sftpd.New(sftpd.Config{
		Listen: "127.0.0.1:0",
		Home:   remote,
		Users:  map[string]sftpd.Account{"alice": {Password: "secret"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	// A link of 4 MiB/s to the server, as a WAN would be.
	link := newSlowLink(t, fmt.Sprintf("127.0.0.1:%d", srv.Port()), 4<<20)
	password := filepath.Join(dir, "password")
	if err := os.WriteFile(password, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "agent.toml")
	writeFile(t, file, fmt.Sprintf(`[agent]
name = "progress"
state_dir = %s
shutdown_grace = "2s"

[nats]
embedded_listen = "127.0.0.1:0"

[[target]]
name = "acme"
host = "127.0.0.1"
port = %d
user = "alice"
password_file = %s
host_key = %q
remote_dir = %s

[[watch]]
path = %s
target = "acme"
settle = "200ms"
after = "keep"
`, tomlString(state), link.port(), tomlString(password), srv.HostKeyFingerprint(), tomlString(remote), tomlString(drop)))

	ctx, cancel := context.WithCancel(t.Context())
	agentLog := &syncBuffer{}
	agentDone := make(chan error, 1)
	go func() { agentDone <- Run(ctx, []string{"run", "-c", file}, io.Discard, agentLog) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-agentDone:
		case <-time.After(20 * time.Second):
			t.Errorf("the agent did not stop")
		}
	})
	waitFor(t, "the agent to start", func() bool {
		_, err := os.Stat(filepath.Join(state, "nats.url"))
		return err == nil && regexp.MustCompile(`msg="agent started"`).MatchString(agentLog.String())
	})

	t.Setenv("NO_COLOR", "1")
	t.Setenv("TERM", "xterm")
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 120, Rows: 20}); err != nil {
		t.Fatal(err)
	}
	screen := &stampedScreen{}
	go func() { _, _ = io.Copy(screen, ptmx) }()
	r := startEvents(t, tty, "-c", file)
	waitFor(t, "dropship events to connect", func() bool { return regexp.MustCompile(`showing`).MatchString(r.stderr.String()) })

	// What the link has carried to the server, sampled every 10 ms.
	var received []sample
	stop := make(chan struct{})
	sampled := make(chan struct{})
	base := link.sent.Load()
	go func() {
		defer close(sampled)
		for {
			received = append(received, sample{time.Now(), link.sent.Load() - base})
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	tmp := filepath.Join(drop, ".big.bin.part")
	writeFile(t, tmp, string(make([]byte, size)))
	if err := os.Rename(tmp, filepath.Join(drop, "big.bin")); err != nil {
		t.Fatal(err)
	}
	completed := regexp.MustCompile(`completed +acme +\S+big\.bin`)
	deadline := time.Now().Add(2 * time.Minute)
	for !completed.MatchString(screen.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("the transfer did not complete; screen:\n%q\nagent:\n%s", screen.String(), agentLog)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	<-sampled

	// What the bars showed, and when.
	barBytes := regexp.MustCompile(`big\.bin .*?([0-9.]+) (B|KiB|MiB)/12\.0 MiB`)
	var shown []sample
	var end time.Time
	for _, c := range screen.chunks {
		for _, m := range barBytes.FindAllStringSubmatch(c.data, -1) {
			v, _ := strconv.ParseFloat(m[1], 64)
			unit := map[string]float64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20}[m[2]]
			shown = append(shown, sample{c.at, int64(v * unit)})
		}
		if completed.MatchString(c.data) && end.IsZero() {
			end = c.at
		}
	}
	if len(shown) == 0 {
		t.Fatalf("no progress bar was drawn; screen:\n%q", screen.String())
	}
	start := shown[0].at
	if end.IsZero() || end.Sub(start) < 2*time.Second {
		t.Fatalf("the transfer took %v from its first bar: too short to see the bars follow it (slow the server down)", end.Sub(start))
	}
	const lag = 500 * time.Millisecond
	// The bar prints one decimal of MiB and moves by whole chunks; the
	// link carries the SSH and SFTP framing too.
	const slack = 512 << 10
	worst := time.Duration(0)
	for _, s := range received {
		if s.at.Before(start.Add(lag)) || !s.at.Before(end) {
			continue
		}
		want := before(received, s.at.Add(-lag)) // what the server had half a second ago
		got := before(shown, s.at)
		if got+slack+want/50 < want {
			// How far behind the bar is: when did the server have what it shows?
			behind := time.Duration(0)
			for _, r := range received {
				if r.bytes > got+slack+got/50 {
					behind = s.at.Sub(r.at)
					break
				}
			}
			worst = max(worst, behind)
		}
	}
	if worst > 0 {
		t.Errorf("the bar was up to %v behind the bytes the server received (want at most %v); %d bar frames over %v",
			worst.Round(time.Millisecond), lag, len(shown), end.Sub(start).Round(time.Millisecond))
	}
	t.Logf("%d bar frames over %v", len(shown), end.Sub(start).Round(time.Millisecond))
	if os.Getenv("PROGRESS_DEBUG") != "" {
		for _, s := range shown {
			t.Logf("bar %v %d link %d", s.at.Sub(start), s.bytes, before(received, s.at))
		}
	}
}

// slowLink is a TCP proxy to a server that carries what the client sends
// at a fixed rate, and counts it.
type slowLink struct {
	l    net.Listener
	sent atomic.Int64
}

func newSlowLink(t *testing.T, server string, bytesPerSecond int64) *slowLink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slowLink{l: l}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", server)
			if err != nil {
				c.Close()
				continue
			}
			wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
			wg.Go(func() {
				defer up.Close()
				defer c.Close()
				start, total := time.Now(), int64(0)
				buf := make([]byte, 16<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						total += int64(n)
						time.Sleep(time.Until(start.Add(time.Duration(total * int64(time.Second) / bytesPerSecond))))
						if _, werr := up.Write(buf[:n]); werr != nil {
							return
						}
						s.sent.Add(int64(n))
					}
					if err != nil {
						return
					}
				}
			})
		}
	})
	return s
}

func (s *slowLink) port() int { return s.l.Addr().(*net.TCPAddr).Port }
