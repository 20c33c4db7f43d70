package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sshdtest"
)

// TestSCPDelivery: a real sshd without an SFTP subsystem, the built agent and
// a real NATS server. With protocol = "scp", files dropped into the watch
// (one with a hostile name, one in a subfolder) arrive byte-identical under
// their names through the legacy scp protocol, atomically (no temporary file
// is left), each with one completed event holding its size and sha256.
// `check -connect` says which protocol each target speaks: "scp" as
// configured, and the one "auto" chose; an agent with "auto" logs its choice
// once and delivers.
func TestSCPDelivery(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{NoSFTP: true})
	e := newEnv(t)
	n := e.externalNATS()
	e.sshdTarget(srv).set("protocol", "scp")
	e.watchFor("sshd").set("recursive", true)
	e.writeConf()

	r := dropship(t, "check", "-connect", "-c", e.cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "target sshd: ok") || !strings.Contains(r.stdout, `protocol scp (chosen by protocol = "scp"; atomic`) {
		t.Errorf("check -connect of a protocol = \"scp\" target:\n%s", r)
	}

	files := map[string][]byte{
		"report.csv":                []byte(strings.Repeat("id,name,amount\n1,widget,3.50\n", 1000)),
		"it's $(touch pwned) a.txt": []byte("hostile name\n"),
		"sub/dir/nested.bin":        randomBytes(t, 2<<20),
	}
	if err := os.MkdirAll(filepath.Join(e.watch, "sub", "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := collect(t, n.url())
	agent := startAgent(t, e.cfg)
	for name, data := range files {
		writeFile(t, filepath.Join(e.watch, name), data)
	}
	eventually(t, 60*time.Second, "every file delivered", func() bool {
		for name, data := range files {
			if !sameContent(filepath.Join(e.remote, name), data) {
				return false
			}
		}
		return true
	})
	eventually(t, 10*time.Second, "three completed events", func() bool {
		return len(c.ofType(events.TypeTransferCompleted)) >= len(files)
	})
	agent.stop(10 * time.Second)
	if p := partials(e.remote); len(p) > 0 {
		t.Errorf("temporary files left on the remote: %q", p)
	}
	all := c.all()
	for name, data := range files {
		completed := filterType(forFile(t, all, filepath.Join(e.watch, name)), events.TypeTransferCompleted)
		if len(completed) != 1 {
			t.Errorf("%s: %d completed events, want 1", name, len(completed))
			continue
		}
		checkEnvelope(t, completed[0], "sshd", events.TransferCompleted)
		d := completed[0].transfer(t)
		if d.SizeBytes != int64(len(data)) || d.SHA256 != sha256Hex(data) {
			t.Errorf("%s: completed event says %d bytes, sha256 %s; want %d, %s", name, d.SizeBytes, d.SHA256, len(data), sha256Hex(data))
		}
		if want := filepath.Join(e.remote, name); d.RemotePath != want {
			t.Errorf("%s: remote_path %q, want %q", name, d.RemotePath, want)
		}
	}

	// protocol = "auto" against the same server chooses scp, and says so.
	e2 := newEnv(t)
	e2.externalNATS()
	e2.sshdTarget(srv)
	e2.writeConf()
	r = dropship(t, "check", "-connect", "-c", e2.cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "protocol scp (the server has no SFTP subsystem") {
		t.Errorf("check -connect of a protocol = \"auto\" target without SFTP:\n%s", r)
	}
	// And an agent of it delivers over scp, saying so once in its log.
	e2.watchFor("sshd")
	e2.writeConf()
	agent2 := startAgent(t, e2.cfg)
	writeFile(t, filepath.Join(e2.watch, "auto.txt"), []byte("auto\n"))
	eventually(t, 60*time.Second, "auto.txt delivered", func() bool {
		return sameContent(filepath.Join(e2.remote, "auto.txt"), []byte("auto\n"))
	})
	agent2.stop(10 * time.Second)
	if logs := agent2.logs(); strings.Count(logs, "the server has no SFTP subsystem; using the legacy scp protocol") != 1 || !strings.Contains(logs, "target=sshd") {
		t.Errorf("the agent did not log its choice of scp once:\n%s", logs)
	}

	home, _ := os.UserHomeDir()
	for _, dir := range []string{home, e.remote, e.watch, srv.Dir, "/"} {
		if exists(filepath.Join(dir, "pwned")) {
			t.Errorf("a name was run by the remote shell: %s/pwned exists", dir)
		}
	}
}

// TestCheckConnectNamesSFTP: "auto" against a server with SFTP says sftp.
func TestCheckConnectNamesSFTP(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	e.externalNATS()
	e.sshdTarget(srv)
	e.writeConf()
	r := dropship(t, "check", "-connect", "-c", e.cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "is a folder, protocol sftp\n") {
		t.Errorf("check -connect of a protocol = \"auto\" target with SFTP:\n%s", r)
	}
}
