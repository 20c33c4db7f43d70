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

// Routes (issue 15 point 4): [[watch.route]] sends to a target only the
// files its match selects, under the name its rename makes; a file no route
// of a target matches is archived once the targets it goes to have it.
func TestFanOutRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	allDir, csvDir := filepath.Join(e.dir, "remote-all"), filepath.Join(e.dir, "remote-csv")
	for _, d := range []string{allDir, csvDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	all := sftpdServer(t, allDir, "alice", "secret")
	e.sftpdTarget("all", all, "alice", "secret").set("remote_dir", allDir)
	csv := sftpdServer(t, csvDir, "bob", "other")
	e.sftpdTarget("csv", csv, "bob", "other").set("remote_dir", csvDir)
	e.conf.add("[[watch]]").
		set("path", e.watch).
		set("targets", []string{"all", "csv"}).
		set("settle", settle)
	e.conf.add("[[watch.route]]").
		set("target", "csv").
		set("match", "*.csv").
		set("rename", "{dir}/{stem}-{date:2006}{ext}")
	e.writeConf()
	if r := dropship(t, "check", "-c", e.cfg); r.code != 0 {
		t.Fatalf("check of a watch with a route: %s", r)
	}
	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	if err := os.Mkdir(filepath.Join(e.watch, "in"), 0o755); err != nil {
		t.Fatal(err)
	}
	csvData, txtData := []byte("a,b\n1,2\n"), []byte("notes\n")
	writeFile(t, filepath.Join(e.watch, "in", "sales.csv"), csvData)
	writeFile(t, filepath.Join(e.watch, "in", "notes.txt"), txtData)
	renamed := filepath.Join(csvDir, "in", "sales-"+time.Now().Format("2006")+".csv")
	eventually(t, 30*time.Second, "both files archived, the csv also at the csv target under its new name", func() bool {
		return sameContent(filepath.Join(allDir, "in", "sales.csv"), csvData) &&
			sameContent(filepath.Join(allDir, "in", "notes.txt"), txtData) &&
			sameContent(renamed, csvData) &&
			!exists(filepath.Join(e.watch, "in", "sales.csv")) && !exists(filepath.Join(e.watch, "in", "notes.txt"))
	})
	agent.stop(10 * time.Second)
	if exists(filepath.Join(csvDir, "in", "notes.txt")) || exists(filepath.Join(csvDir, "in", "sales.csv")) {
		t.Error("the csv target got a file its route does not match, or the csv under its old name")
	}
	for _, m := range c.ofType(events.TypeTransferCompleted) {
		tr := m.transfer(t)
		if tr.Target.Name == "csv" && tr.RemotePath != renamed {
			t.Errorf("completed event of the csv target says remote_path %q, want %q", tr.RemotePath, renamed)
		}
	}
	if got := len(c.ofType(events.TypeTransferCompleted)); got != 3 {
		t.Errorf("%d completed events, want 3 (two files to all, one to csv)", got)
	}
}
