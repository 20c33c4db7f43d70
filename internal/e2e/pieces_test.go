package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sshdtest"
)

// A writer that closes the file and opens it again between pieces, with
// pauses longer than settle (issue 17 point 4): the piece that was delivered
// is not passed off silently. The next version raises a WARN and carries a
// warning naming the cause and the fix; with overwrite = false it never
// replaces the earlier version on the remote (it fails as remote-exists),
// and the archive keeps every version.
func TestPiecesAreNotPassedOffAsFiles(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	n := e.externalNATS()
	e.sshdTarget(srv).set("overwrite", false)
	e.watchFor("sshd")
	e.writeConf()
	c := collect(t, n.url())
	a := startAgent(t, e.cfg)

	p := filepath.Join(e.watch, "report.csv")
	first := bytes.Repeat([]byte("piece one\n"), 1000)
	writeFile(t, p, first)
	remote := filepath.Join(e.remote, "report.csv")
	eventually(t, 20*time.Second, "the first piece delivered", func() bool { return sameContent(remote, first) })
	eventually(t, 10*time.Second, "the first piece archived", func() bool { return !exists(p) })

	// The writer opens the file again, `>>` style, after its pause.
	second := bytes.Repeat([]byte("piece two\n"), 1000)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(second); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var warned events.Transfer
	eventually(t, 20*time.Second, "a queued event with a warning about pieces", func() bool {
		for _, m := range forFile(t, c.ofType(events.TypeTransferQueued), p) {
			if d := m.transfer(t); d.Warning != "" {
				warned = d
				return true
			}
		}
		return false
	})
	for _, want := range []string{"settle", "ready_marker", "reappeared"} {
		if !strings.Contains(warned.Warning, want) {
			t.Errorf("warning %q does not mention %q", warned.Warning, want)
		}
	}
	eventually(t, 20*time.Second, "the second piece failed as remote-exists", func() bool {
		for _, m := range forFile(t, c.ofType(events.TypeTransferFailed), p) {
			if d := m.transfer(t); d.TransferID == warned.TransferID && d.Error != nil && d.Error.Class == "remote-exists" {
				return true
			}
		}
		return false
	})
	if !sameContent(remote, first) {
		t.Error("the remote file was replaced although overwrite = false")
	}
	// `dropship status` lists it, with what `retry` needs.
	r := dropship(t, "status", "-c", e.cfg, "-json")
	var st struct {
		Failed []struct {
			ID                   string `json:"transfer_id"`
			Path, Class, Warning string
		} `json:"failed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status -json: %v\n%s", err, r)
	}
	if len(st.Failed) != 1 || st.Failed[0].ID != warned.TransferID || st.Failed[0].Class != "remote-exists" || st.Failed[0].Path != p || st.Failed[0].Warning == "" {
		t.Errorf("status lists failed files %+v, want the second piece (%s, remote-exists, with its warning)", st.Failed, warned.TransferID)
	}
	if !strings.Contains(a.logs(), "written in pieces?") {
		t.Error("no WARN in the agent's log")
	}
	if p := partials(e.remote); len(p) != 0 {
		t.Errorf("temporary files left on the remote: %q", p)
	}
	// The archive has the first version; the second stays in the drop
	// folder until the operator decides.
	archived := names(filepath.Join(e.watch, ".dropship-sent"))
	if len(archived) != 1 || !sameContent(filepath.Join(e.watch, ".dropship-sent", archived[0]), first) {
		t.Errorf("archive holds %q, want the first version", archived)
	}
	if !sameContent(p, second) {
		t.Error("the second version left the drop folder")
	}
}
