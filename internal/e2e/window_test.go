package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
)

// A target's window (window = "HH:MM-HH:MM") holds its files while it is
// closed: queued, not sent, and `dropship status` says when it opens; a
// reload that opens it sends them. bandwidth is accepted beside it.
func TestWindowHoldsFilesUntilItOpens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	url := e.embeddedNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	now := time.Now()
	closed := fmt.Sprintf("%s-%s", now.Add(2*time.Hour).Format("15:04"), now.Add(3*time.Hour).Format("15:04"))
	tgt := e.sftpdTarget("partner", srv, "alice", "secret").
		set("window", closed).
		set("bandwidth", "50MiB/s")
	e.watchFor("partner")
	e.writeConf()
	agent := startAgent(t, e.cfg)
	c := collect(t, url)

	data := []byte("waits for the window\n")
	writeFile(t, filepath.Join(e.watch, "night.txt"), data)
	agent.waitLog(20*time.Second, "outside the target's window")
	eventually(t, 10*time.Second, "a queued event that says the file waits for the window", func() bool {
		for _, m := range c.ofType(events.TypeTransferQueued) {
			if strings.Contains(m.transfer(t).Reason, "waits for the target's window "+closed) {
				return true
			}
		}
		return false
	})
	var ts = targetStatus(t, status(t, "-c", e.cfg), "partner")
	eventually(t, 10*time.Second, "the file queued for the closed window", func() bool {
		ts = targetStatus(t, status(t, "-c", e.cfg), "partner")
		return ts.Queued == 1
	})
	if ts.WindowOpens == nil || ts.Window != closed {
		t.Errorf("status of a target outside its window %q: window %q, opens %v", closed, ts.Window, ts.WindowOpens)
	} else if want := now.Add(2 * time.Hour).Truncate(time.Minute); ts.WindowOpens.Sub(want).Abs() > time.Minute {
		t.Errorf("status says the window opens at %v, want about %v", ts.WindowOpens, want)
	}
	if r := dropship(t, "status", "-c", e.cfg); !strings.Contains(r.stdout, "outside its window "+closed) {
		t.Errorf("dropship status does not say the target waits for its window:\n%s", r)
	}
	if exists(filepath.Join(e.remote, "night.txt")) {
		t.Fatal("a file was sent outside the target's window")
	}

	tgt.set("window", "00:00-24:00")
	e.writeConf()
	agent.signal(syscall.SIGHUP)
	eventually(t, 20*time.Second, "the file sent once the window is open", func() bool {
		return sameContent(filepath.Join(e.remote, "night.txt"), data)
	})
}
