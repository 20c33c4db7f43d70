package transfer

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// Secrets never reach an observer, a log line, an error, a client's argv or
// its environment (issue 3 point 6).

// procWatch records the argv and environment of every ssh and sftp process
// that talks to one of the ports, while it runs.
type procWatch struct {
	ports []int
	stop  chan struct{}
	wg    sync.WaitGroup

	mu   sync.Mutex
	seen map[int]watched
}

type watched struct {
	comm    string
	cmdline []string
	environ []string
}

func watchProcs(ports ...int) *procWatch {
	w := &procWatch{ports: ports, stop: make(chan struct{}), seen: map[int]watched{}}
	w.wg.Go(func() {
		for {
			for _, p := range clientsFor(w.ports...) {
				env, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/environ")
				if err != nil || len(env) == 0 || p.state == "Z" {
					continue // gone, or exiting: the kernel shows nothing
				}
				w.mu.Lock()
				if _, ok := w.seen[p.pid]; !ok {
					w.seen[p.pid] = watched{comm: p.comm, cmdline: p.cmdline, environ: strings.Split(strings.TrimRight(string(env), "\x00"), "\x00")}
				}
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	return w
}

func (w *procWatch) done() map[int]watched {
	close(w.stop)
	w.wg.Wait()
	return w.seen
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	// A password with a space, shell and glob characters, and a control
	// character (^U, the tty's line-kill) that must be typed literally.
	password := "pa ss$(x)*\x15wörd-7c1"
	kbdSrv, kbdTarget := startSFTPD(t, kbdAccount(sftpd.Question{Prompt: "Password: ", Answer: password}), sftpd.Config{})
	pwSrv, pwTarget := startSFTPD(t, sftpd.Account{Password: password}, sftpd.Config{})
	sshd, keyTarget := startSSHD(t, sshdtest.Options{})
	passphrase := sshd.EncryptedKeyPassphrase
	keyTarget.Identity = sshd.EncryptedClientKey

	secrets := []string{password, passphrase, "wrong-" + password, "wrong-" + passphrase}
	// Parts a careless scrubber or an echo could leave behind.
	fragments := []string{"ss$(x)*", "wörd-7c1", passphrase}

	watch := watchProcs(kbdSrv.Port(), pwSrv.Port(), sshd.Port)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := &recorder{}
	var errs []string
	var errMu sync.Mutex

	type scenario struct {
		name     string
		target   Target
		secret   Secret
		isPhrase bool
		ok       bool
	}
	var scenarios []scenario
	for _, good := range []bool{true, false} {
		pw, pp := password, passphrase
		if !good {
			pw, pp = "wrong-"+password, "wrong-"+passphrase
		}
		scenarios = append(scenarios,
			scenario{"password", pwTarget, NewSecret([]byte(pw)), false, good},
			scenario{"kbd-int", kbdTarget, NewSecret([]byte(pw)), false, good},
			scenario{"passphrase", keyTarget, NewSecret([]byte(pp)), true, good},
		)
	}
	var wg sync.WaitGroup
	for _, sc := range scenarios {
		for _, shared := range []bool{false, true} {
			wg.Go(func() {
				tg := sc.target
				if sc.isPhrase {
					tg.Passphrase = sc.secret
				} else {
					tg.Password = sc.secret
				}
				opts := Options{Atomic: true, Logger: logger, OnConnectionLine: rec.connectionLine}
				if shared {
					opts.ControlDir = controlDir(t)
				}
				c := newClient(t, tg, opts)
				items, _ := oneFile(t, sc.name)
				res := upload(t, c, items, rec.observer())
				if sc.ok {
					wantDelivered(t, items, res)
				} else if ClassOf(res[0].Err) != ClassAuth {
					t.Errorf("%s shared=%v with a wrong secret: %v", sc.name, shared, res[0].Err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				checkErr := c.Check(ctx, "/")
				errMu.Lock()
				defer errMu.Unlock()
				for _, err := range []error{res[0].Err, checkErr} {
					if err != nil {
						errs = append(errs, err.Error(), err.(*Error).Message)
					}
				}
			})
		}
	}
	wg.Wait()
	seen := watch.done()

	published := rec.text() + "\n" + logs.String() + "\n" + strings.Join(errs, "\n")
	for _, s := range append(secrets, fragments...) {
		if strings.Contains(published, s) {
			t.Errorf("secret %q was published", s)
		}
	}
	if !strings.Contains(published, "Authenticated to") || !strings.Contains(published, "Permission denied") {
		t.Errorf("the recording lacks the clients' output: the test proves nothing\n%s", published)
	}

	// Every client ran with exactly childEnv() and no secret in its argv.
	if len(seen) < 12 {
		t.Errorf("saw only %d client processes: the test proves nothing", len(seen))
	}
	want := childEnv()
	slices.Sort(want)
	for pid, w := range seen {
		all := strings.Join(w.cmdline, "\x00") + "\x00" + strings.Join(w.environ, "\x00")
		for _, s := range append(secrets, fragments...) {
			if strings.Contains(all, s) {
				t.Errorf("%s (pid %d) holds secret %q in its argv or environment: %q", w.comm, pid, s, w.cmdline)
			}
		}
		got := slices.Clone(w.environ)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s (pid %d) environment %q, want childEnv() %q", w.comm, pid, got, want)
		}
	}
}
