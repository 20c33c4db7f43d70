package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
)

// A watch with targets = ["near", "far"] sends each file to both,
// independently (issue 15 point 3): with "far" down, "near" gets the file at
// once and "far" once it is back; each target has its own transfer and
// lifecycle events; the file is archived only when both have it.
func TestFanOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	nearDir, farDir := filepath.Join(e.dir, "remote-near"), filepath.Join(e.dir, "remote-far")
	for _, d := range []string{nearDir, farDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	near := sftpdServer(t, nearDir, "alice", "secret")
	e.sftpdTarget("near", near, "alice", "secret").set("remote_dir", nearDir)
	farPort := freePort(t) // nothing listens yet: far is down
	e.target("far", "127.0.0.1", farPort, "bob").
		set("password_file", e.secretFile("far.password", "far-secret\n")).
		set("host_key", "accept-new").
		set("remote_dir", farDir)
	e.conf.add("[[watch]]").
		set("path", e.watch).
		set("targets", []string{"near", "far"}).
		set("settle", settle)
	e.writeConf()
	if r := dropship(t, "check", "-c", e.cfg); r.code != 0 {
		t.Fatalf("check of a fan-out watch: %s", r)
	}

	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	data := []byte("to both partners\n")
	src := filepath.Join(e.watch, "both.txt")
	writeFile(t, src, data)
	eventually(t, 30*time.Second, "the file at the target that is up", func() bool {
		return sameContent(filepath.Join(nearDir, "both.txt"), data)
	})
	eventually(t, 30*time.Second, "the target that is down retrying", func() bool {
		return len(c.ofType(events.TypeTransferRetrying)) > 0
	})
	if !sameContent(src, data) {
		t.Fatal("the file was archived or moved while one of its targets did not have it")
	}

	far, err := sftpd.New(sftpd.Config{
		Listen: fmt.Sprintf("127.0.0.1:%d", farPort),
		Home:   farDir,
		Users:  map[string]sftpd.Account{"bob": {Password: "far-secret"}},
	})
	if err != nil {
		t.Fatalf("start the far server: %v", err)
	}
	t.Cleanup(func() { _ = far.Close() })
	eventually(t, 30*time.Second, "the file at the target that came back, then archived", func() bool {
		return sameContent(filepath.Join(farDir, "both.txt"), data) && !exists(src)
	})
	archived := filepath.Join(e.watch, ".dropship-sent", "both.txt")
	eventually(t, 10*time.Second, "the file in the archive", func() bool { return sameContent(archived, data) })
	agent.stop(10 * time.Second)

	// One transfer per target, each completed once.
	completed := map[string][]string{}
	for _, m := range c.ofType(events.TypeTransferCompleted) {
		tr := m.transfer(t)
		completed[tr.Target.Name] = append(completed[tr.Target.Name], tr.TransferID)
	}
	if len(completed["near"]) != 1 || len(completed["far"]) != 1 || completed["near"][0] == completed["far"][0] {
		t.Errorf("completed events by target %v, want one for each, with different transfer ids", completed)
	}
	checkOrder(t, storedEvents(t, n.url()))
}
