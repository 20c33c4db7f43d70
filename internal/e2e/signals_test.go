package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
)

// TestReloadRefusesInvalidConfig sends SIGHUP after breaking the config file:
// the agent says it refused the new file, publishes an agent error event,
// and keeps running with the old configuration: a file dropped afterwards
// still arrives. SIGTERM then stops it with exit status 0 within
// shutdown_grace.
func TestReloadRefusesInvalidConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.conf.get("[agent]").set("shutdown_grace", "3s")
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	good := e.conf.String()
	broken := good + "[[watch]]\npath = \"" + filepath.Join(e.dir, "missing") + "\"\ntarget = \"nobody\"\nbogus = 1\n"
	if err := os.WriteFile(e.cfg, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	agent.signal(syscall.SIGHUP)
	agent.waitLog(10*time.Second, "reload refused")
	eventually(t, 10*time.Second, "an agent error event", func() bool {
		return len(c.ofType(events.TypeAgentError)) > 0
	})
	if len(c.ofType(events.TypeAgentReloaded)) > 0 {
		t.Error("an agent reloaded event for a refused configuration")
	}

	data := []byte("after the refused reload\n")
	writeFile(t, filepath.Join(e.watch, "after.txt"), data)
	eventually(t, 30*time.Second, "the file dropped after the refused reload to arrive", func() bool {
		return sameContent(filepath.Join(e.remote, "after.txt"), data)
	})

	start := time.Now()
	agent.stop(3*time.Second + 2*time.Second)
	t.Logf("stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	eventually(t, 5*time.Second, "an agent stopping event", func() bool {
		return len(c.ofType(events.TypeAgentStopping)) > 0
	})
}

// TestReloadAppliesValidConfig: SIGHUP with a valid new file that adds a
// watch; the agent says it reloaded, and files dropped in the new folder
// arrive.
func TestReloadAppliesValidConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	second := filepath.Join(e.dir, "second drop")
	if err := os.Mkdir(second, 0o755); err != nil {
		t.Fatal(err)
	}
	e.conf.add("[[watch]]").set("path", second).set("target", "partner").set("settle", settle)
	e.writeConf()
	agent.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "an agent reloaded event", func() bool {
		return len(c.ofType(events.TypeAgentReloaded)) > 0
	})
	data := []byte("through the new watch\n")
	writeFile(t, filepath.Join(second, "new.txt"), data)
	eventually(t, 30*time.Second, "the file of the new watch to arrive", func() bool {
		return sameContent(filepath.Join(e.remote, "new.txt"), data)
	})
	agent.stop(10 * time.Second)
}

// TestStopDuringTransfer sends SIGTERM while a slow upload runs: the agent
// exits 0 within shutdown_grace (plus the time to stop the client), nothing
// is left under the final remote name, and the source stays in the drop
// folder to be sent at the next start.
func TestStopDuringTransfer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	srv.SetFaults(sftpd.Faults{WriteDelay: 200 * time.Millisecond})
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.conf.get("[agent]").set("shutdown_grace", "1s")
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	data := randomBytes(t, 4<<20)
	src := filepath.Join(e.watch, "slow.bin")
	writeFile(t, src, data)
	eventually(t, 30*time.Second, "the upload to start", func() bool {
		return len(c.ofType(events.TypeTransferStarted)) > 0 && len(partials(e.remote)) > 0
	})
	start := time.Now()
	agent.stop(1*time.Second + 10*time.Second)
	took := time.Since(start)
	if took < time.Second {
		t.Errorf("stopped after %s: the running upload did not get its shutdown_grace of 1s", took)
	}
	if exists(filepath.Join(e.remote, "slow.bin")) {
		t.Error("a stopped upload left a file under its final remote name")
	}
	if !sameContent(src, data) {
		t.Error("the source of a stopped upload is not in the drop folder as it was")
	}
	if got := c.ofType(events.TypeTransferCompleted); len(got) != 0 {
		t.Errorf("%d completed events for a stopped upload", len(got))
	}
	if strings.Contains(agent.logs(), "panic") {
		t.Error("the agent panicked")
	}

	// At the next start the file is sent.
	srv.SetFaults(sftpd.Faults{})
	agent = startAgent(t, e.cfg)
	eventually(t, 30*time.Second, "the file delivered after the restart", func() bool {
		return sameContent(filepath.Join(e.remote, "slow.bin"), data) && !exists(src)
	})
	agent.stop(10 * time.Second)
	if p := partials(e.remote); len(p) > 0 {
		t.Errorf("temporary files left on the remote: %q", p)
	}
}

// TestStopLetsTransferFinish sends SIGTERM while an upload runs that needs
// less than shutdown_grace: the agent lets it finish, records and publishes
// its completion, archives the source, and exits 0.
func TestStopLetsTransferFinish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	srv.SetFaults(sftpd.Faults{WriteDelay: 50 * time.Millisecond})
	e.sftpdTarget("partner", srv, "alice", "secret")
	e.watchFor("partner")
	e.conf.get("[agent]").set("shutdown_grace", "20s")
	e.writeConf()

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	data := randomBytes(t, 2<<20)
	src := filepath.Join(e.watch, "finish me.bin")
	writeFile(t, src, data)
	eventually(t, 30*time.Second, "the upload to start", func() bool {
		return len(c.ofType(events.TypeTransferStarted)) > 0 && len(partials(e.remote)) > 0
	})
	agent.stop(20*time.Second + 5*time.Second)
	if !sameContent(filepath.Join(e.remote, "finish me.bin"), data) {
		t.Error("the running upload was not let finish")
	}
	if exists(src) || !sameContent(filepath.Join(e.watch, ".dropship-sent", "finish me.bin"), data) {
		t.Error("the source of the finished upload was not archived before the agent exited")
	}
	if got := len(filterType(storedEvents(t, n.url()), events.TypeTransferCompleted)); got != 1 {
		t.Errorf("%d completed events stored, want 1", got)
	}
}
