package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// Resume (issue 11 point 5): an interrupted big upload continues from what
// the server holds under the temporary name when that is a prefix of the
// same version of the local file, and never otherwise.

// bufferLogger is a debug logger writing into buf.
func bufferLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// reopen is it with a descriptor of its file opened anew, as the agent's
// next attempt has.
func reopen(t *testing.T, it Item) Item {
	t.Helper()
	f, err := os.Open(it.Local)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	it.File, it.Size = f, fi.Size()
	return it
}

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// interrupted uploads it to a built-in server that drops the connection
// once one of the striped sessions wrote nearly its share (a quarter of the
// file), and checks the failure left the temporary file and a checkpoint.
func interrupted(t *testing.T, srv *sftpd.Server, c *Client, it Item, resumeDir string, logs *syncBuffer) {
	t.Helper()
	srv.SetFaults(sftpd.Faults{DisconnectAfter: it.Size/stripeWidth - 2*chunkSize})
	res := upload(t, c, []Item{it}, Observer{})
	wantClass(t, res[0].Err, ClassLostConnection)
	srv.SetFaults(sftpd.Faults{})
	if fi, err := os.Stat(it.TempPath()); err != nil || fi.Size() == 0 {
		t.Fatalf("after the interruption (%v) the temporary file %s is not there (%v); log:\n%s", res[0].Err, it.TempPath(), err, logs)
	}
	if cks, _ := filepath.Glob(filepath.Join(resumeDir, "*.json")); len(cks) != 1 {
		t.Fatalf("checkpoints after the interruption: %q, want one", cks)
	}
}

func resumeClient(t *testing.T, q sftpd.Quirks) (*sftpd.Server, *Client, string, *syncBuffer) {
	t.Helper()
	srv, tg := quirkServer(t, q, sftpd.Faults{})
	tg.Connections = 1
	resumeDir := t.TempDir()
	logs := &syncBuffer{}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t), ResumeDir: resumeDir, Logger: bufferLogger(logs)})
	c.stripeRTT = 0 // the interruption comes from one of the striped sessions
	return srv, c, resumeDir, logs
}

func TestResumeAfterLostConnection(t *testing.T) {
	t.Parallel()
	srv, c, resumeDir, logs := resumeClient(t, sftpd.Quirks{})
	data := content("resume", 64<<20+12345)
	remote := t.TempDir()
	it := localItem(t, "01resume", "big.bin", data, remote, "sub/big.bin")
	interrupted(t, srv, c, it, resumeDir, logs)

	ck := c.loadCheckpoint(it.RemotePath())
	if ck == nil {
		t.Fatal("no checkpoint")
	}
	held := ck.Offset
	for _, r := range ck.Acked {
		held += r[1] - r[0]
	}
	before := srv.Stats().BytesWritten
	res := upload(t, c, []Item{reopen(t, it)}, Observer{})
	wantDelivered(t, []Item{it}, res)
	if res[0].SHA256 != sumOf(data) {
		t.Errorf("sha256 %s after resuming, want %s (the whole file's)", res[0].SHA256, sumOf(data))
	}
	// What the server held is not sent again (writes of the dropped
	// connection that the server was still serving may count here too).
	sent := srv.Stats().BytesWritten - before
	if held < resumeEvery || sent > int64(len(data))-held+4*chunkSize {
		t.Errorf("the second attempt sent %d of %d bytes, the server holding %d: it did not resume (log:\n%s)", sent, len(data), held, logs)
	}
	if !strings.Contains(logs.String(), "resuming an interrupted upload") {
		t.Errorf("no log line says the upload resumed:\n%s", logs)
	}
	wantNoTempFiles(t, filepath.Join(remote, "sub"))
	if cks, _ := filepath.Glob(filepath.Join(resumeDir, "*")); len(cks) != 0 {
		t.Errorf("checkpoints left after the delivery: %q", cks)
	}
}

// A local file rewritten in place after the interruption, same size, its
// mtime put back (only its ctime tells): sent whole, never spliced.
func TestResumeNeverOntoAnotherVersion(t *testing.T) {
	t.Parallel()
	srv, c, resumeDir, logs := resumeClient(t, sftpd.Quirks{})
	data := content("v1", 64<<20)
	remote := t.TempDir()
	it := localItem(t, "01version", "big.bin", data, remote, "big.bin")
	interrupted(t, srv, c, it, resumeDir, logs)

	fi, err := os.Stat(it.Local)
	if err != nil {
		t.Fatal(err)
	}
	newer := content("v2", len(data))
	if err := os.WriteFile(it.Local, newer, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(it.Local, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	before := srv.Stats().BytesWritten
	res := upload(t, c, []Item{reopen(t, it)}, Observer{})
	wantDelivered(t, []Item{it}, res) // compares with the local file: the new version
	if res[0].SHA256 != sumOf(newer) {
		t.Errorf("sha256 %s, want the new version's %s", res[0].SHA256, sumOf(newer))
	}
	if sent := srv.Stats().BytesWritten - before; sent < int64(len(newer)) {
		t.Errorf("%d of %d bytes sent for a changed file: resumed onto another version", sent, len(newer))
	}
	if !strings.Contains(logs.String(), "the local file changed since the interrupted upload") {
		t.Errorf("no log line says why it was not resumed:\n%s", logs)
	}
}

// The server's copy altered after the interruption (another process, a
// server that lost data): the prefix is not trusted.
func TestResumeChecksTheServersCopy(t *testing.T) {
	t.Parallel()
	srv, c, resumeDir, logs := resumeClient(t, sftpd.Quirks{})
	data := content("tamper", 64<<20)
	remote := t.TempDir()
	it := localItem(t, "01tamper", "big.bin", data, remote, "big.bin")
	interrupted(t, srv, c, it, resumeDir, logs)

	// Zero the last bytes before the resume point, where the check
	// reads.
	ck := c.loadCheckpoint(it.RemotePath())
	if ck == nil {
		t.Fatal("no checkpoint")
	}
	f, err := os.OpenFile(it.TempPath(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), ck.Offset-4096); err != nil {
		t.Fatal(err)
	}
	f.Close()

	res := upload(t, c, []Item{reopen(t, it)}, Observer{})
	wantDelivered(t, []Item{it}, res)
	if !strings.Contains(logs.String(), "does not hold the bytes sent") {
		t.Errorf("no log line says the upload was not resumed:\n%s", logs)
	}
}

// A new version of the file (a new transfer) finds the older transfer's
// checkpoint: that transfer's temporary file is removed, nothing is left.
func TestResumeNewTransferRemovesOlderLeftover(t *testing.T) {
	t.Parallel()
	srv, c, resumeDir, logs := resumeClient(t, sftpd.Quirks{})
	data := content("old", 64<<20)
	remote := t.TempDir()
	it := localItem(t, "01oldtransfer", "big.bin", data, remote, "big.bin")
	interrupted(t, srv, c, it, resumeDir, logs)

	newer := content("new", 20<<20)
	it2 := localItem(t, "02newtransfer", "big.bin", newer, remote, "big.bin")
	res := upload(t, c, []Item{it2}, Observer{})
	wantDelivered(t, []Item{it2}, res)
	wantNoTempFiles(t, remote)
	if cks, _ := filepath.Glob(filepath.Join(resumeDir, "*")); len(cks) != 0 {
		t.Errorf("checkpoints left: %q", cks)
	}
}

// Against OpenSSH's sshd: an upload stopped midway (the agent stopping)
// continues on the next attempt, and the sha256 is the whole file's.
func TestResumeOnRealSSHD(t *testing.T) {
	t.Parallel()
	_, tg := startSSHD(t, sshdtest.Options{})
	tg.Connections = 1
	resumeDir := t.TempDir()
	logs := &syncBuffer{}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t), ResumeDir: resumeDir, Logger: bufferLogger(logs)})
	data := content("sshd", 160<<20)
	remote := t.TempDir()
	it := localItem(t, "01sshd", "big.bin", data, remote, "big.bin")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Stop once the server holds a few checkpoints' worth.
		for ctx.Err() == nil {
			if fi, err := os.Stat(it.TempPath()); err == nil && fi.Size() >= 4*resumeEvery {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	res := c.Upload(ctx, []Item{it}, Observer{})
	if res[0].Err == nil {
		t.Skip("the upload ended before it could be stopped; nothing to resume")
	}
	wantClass(t, res[0].Err, ClassCanceled)
	if cks, _ := filepath.Glob(filepath.Join(resumeDir, "*.json")); len(cks) != 1 {
		t.Fatalf("checkpoints after the stop: %q (log:\n%s)", cks, logs)
	}
	res = upload(t, c, []Item{reopen(t, it)}, Observer{})
	wantDelivered(t, []Item{it}, res)
	if res[0].SHA256 != sumOf(data) {
		t.Errorf("sha256 %s, want %s", res[0].SHA256, sumOf(data))
	}
	if !strings.Contains(logs.String(), "resuming an interrupted upload") {
		t.Errorf("the second attempt did not resume:\n%s", logs)
	}
	wantNoTempFiles(t, remote)
}
