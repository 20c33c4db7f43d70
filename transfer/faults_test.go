package transfer

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
	"golang.org/x/crypto/ssh"
)

// Injected faults against the built-in server (issue 3 points 3, 4 and 8):
// each failure has the class the agent acts on, its message says what failed
// (the server's status, or for a lost connection the line ssh printed), files
// are independent (one refused write does not fail the others), and a failed
// attempt leaves nothing under the final name and no temporary file.

// keyAccount is a built-in server account that logs in with a fresh key,
// and the target's identity for it.
func keyAccount(t *testing.T) (sftpd.Account, string) {
	t.Helper()
	key, pub := clientKey(t)
	return sftpd.Account{AuthorizedKeys: []ssh.PublicKey{pub}}, key
}

// wantQuotesClient fails unless the error message contains a line the
// client printed: the class was read from the client's own words.
func wantQuotesClient(t *testing.T, err error, rec *recorder) {
	t.Helper()
	te, ok := err.(*Error)
	if !ok {
		t.Fatalf("%T %v is not a *Error", err, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, l := range rec.lines {
		_, line, _ := strings.Cut(l, ": ")
		if len(line) > 10 && strings.Contains(te.Message, line) {
			return
		}
	}
	t.Errorf("message %q quotes none of the client's lines:\n%s", te.Message, strings.Join(rec.lines, "\n"))
}

func TestFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		faults   sftpd.Faults
		size     int
		class    Class
		quote    string // in the message
		conn     bool   // the connection fails: the message quotes ssh
		fileOnly bool   // only the faulty file fails; the others arrive
		maxTime  time.Duration
	}{
		{"disconnect", sftpd.Faults{DisconnectAfter: 256 << 10}, 1 << 20, ClassLostConnection, "", true, false, 20 * time.Second},
		{"hang", sftpd.Faults{HangAfter: 256 << 10}, 1 << 20, "", "", true, false, 15 * time.Second},
		{"disk full", sftpd.Faults{DiskFullAfter: 100 << 10}, 1 << 20, ClassRemoteFull, "Failure", false, true, 20 * time.Second},
		{"denied write", sftpd.Faults{DenyWrite: true}, 1 << 10, ClassRemotePermission, "Permission denied", false, false, 20 * time.Second},
		{"rename refused", sftpd.Faults{RejectRename: true}, 1 << 10, ClassRemotePermission, "rename", false, false, 20 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			acct, key := keyAccount(t)
			srv, tg := startSFTPD(t, acct, sftpd.Config{Faults: c.faults})
			tg.Identity = key
			tg.StallTimeout = 3 * time.Second
			rec := &recorder{}
			opts := Options{Atomic: true, Overwrite: true, OnConnectionLine: rec.connectionLine, ControlDir: controlDir(t)}
			remote := t.TempDir()
			items := []Item{
				localItem(t, "ok1", "first.txt", content("first", 1000), remote, "first.txt"),
				localItem(t, "bad2", "second.bin", content("second", c.size), remote, "sub/second.bin"),
				localItem(t, "later3", "third.txt", content("third", 10), remote, "third.txt"),
			}
			if c.faults.DenyWrite || c.faults.RejectRename {
				items = items[1:]
			}
			start := time.Now()
			res := upload(t, newClient(t, tg, opts), items, rec.observer())
			took := time.Since(start)
			bad := res[len(res)-2]
			switch c.class {
			case "":
				// A frozen server: ssh's keepalives or the stall
				// watchdog end it, whichever comes first.
				e := wantClass(t, bad.Err, ClassOf(bad.Err))
				t.Logf("frozen server ended after %s: %v", took, e)
				if e.Class != ClassStalled && e.Class != ClassLostConnection {
					t.Errorf("class %s, want stalled or lost-connection: %v", e.Class, e.Message)
				}
				if e.Class == ClassLostConnection {
					wantQuotesClient(t, bad.Err, rec)
				}
			default:
				wantClass(t, bad.Err, c.class, c.quote)
				if c.conn {
					wantQuotesClient(t, bad.Err, rec)
				}
			}
			if !bad.Began {
				t.Error("the failed item did not begin")
			}
			if took > c.maxTime {
				t.Errorf("the attempt took %s, more than %s", took, c.maxTime)
			}
			if got := ClassOf(bad.Err).Retryable(); got != (c.class != ClassRemotePermission) {
				t.Errorf("%s: retryable = %v", ClassOf(bad.Err), got)
			}
			// Whatever succeeded is in place, whole; whatever failed
			// is not under its final name.
			for i, r := range res {
				if r.Err == nil {
					wantDelivered(t, items[i:i+1], res[i:i+1])
				} else {
					wantAbsent(t, items[i].RemotePath())
				}
			}
			if c.fileOnly {
				wantDelivered(t, []Item{items[0], items[2]}, []Result{res[0], res[2]})
			}
			// The temporary files are removed, over a new connection
			// when the old one was lost.
			srv.SetFaults(sftpd.Faults{})
			if c.faults.HangAfter == 0 {
				wantNoTempFiles(t, remote)
			}
			if t.Failed() {
				t.Logf("output:\n%s", rec.text())
			}
		})
	}
}

// A remote_dir that does not exist is the operator's to fix: class
// remote-path, a message that names remote_dir and the path, not retried,
// nothing created on the server; Check says the same without sending a file.
func TestMissingRemoteDir(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	_, builtin := startSFTPD(t, acct, sftpd.Config{})
	builtin.Identity = key
	_, real := startSSHD(t, sshdtest.Options{})
	for _, tg := range []Target{builtin, real} {
		base := t.TempDir()
		missing := filepath.Join(base, "no", "such", "dir")
		rec := &recorder{}
		c := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t), OnConnectionLine: rec.connectionLine})
		items := []Item{localItem(t, "m1", "m.txt", content("m", 10), missing, "sub/m.txt")}
		res := upload(t, c, items, rec.observer())
		e := wantClass(t, res[0].Err, ClassRemotePath, "remote_dir", strconv.Quote(missing), "does not exist")
		if e.Class.Retryable() {
			t.Error("a missing remote_dir must not be retried")
		}
		if res[0].Began {
			t.Error("Began is true: nothing should have been sent")
		}
		// Not created, not even in part.
		wantAbsent(t, filepath.Join(base, "no"))
		// Check says the same without sending anything.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rec = &recorder{}
		c = newClient(t, tg, Options{Atomic: true, OnConnectionLine: rec.connectionLine})
		err := c.Check(ctx, missing)
		wantClass(t, err, ClassRemotePath, "remote_dir", strconv.Quote(missing))
		if err := c.Check(ctx, base); err != nil {
			t.Errorf("%s: Check of an existing folder: %v", tg.Name, err)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", tg.Name, rec.text())
			return
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	requireClients(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	tg := Target{Name: "refused", Host: "127.0.0.1", Port: port, User: "nobody", HostKey: HostKeyStrict,
		KnownHosts: []string{filepath.Join(t.TempDir(), "kh")}, ConnectTimeout: 5 * time.Second}
	for _, shared := range []bool{false, true} {
		rec := &recorder{}
		opts := Options{Atomic: true, OnConnectionLine: rec.connectionLine}
		if shared {
			opts.ControlDir = controlDir(t)
		}
		items, _ := oneFile(t, "refused")
		res := upload(t, newClient(t, tg, opts), items, rec.observer())
		e := wantClass(t, res[0].Err, ClassConnectRefused, "Connection refused")
		wantQuotesClient(t, res[0].Err, rec)
		if !e.Class.Retryable() {
			t.Error("a refused connection must be retryable")
		}
	}
}

// Atomic delivery: a reader polling the remote folder never sees the final
// name before the content is complete; several folder levels are created.
func TestAtomicDeliveryIsNeverSeenPartial(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	_, tg := startSFTPD(t, acct, sftpd.Config{Faults: sftpd.Faults{WriteDelay: 10 * time.Millisecond}})
	tg.Identity = key
	remote := t.TempDir()
	const size = 2 << 20
	items := []Item{
		localItem(t, "big", "big.bin", content("big", size), remote, "a/b/c/d/big.bin"),
		localItem(t, "small", "small.txt", content("small", 100), remote, "a/b/other/small.txt"),
	}
	final := items[0].RemotePath()
	temp := items[0].TempPath()

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var sawPartialTemp bool
	var badFinal []int64
	wg.Go(func() {
		for {
			if fi, err := os.Stat(temp); err == nil && fi.Size() < size {
				sawPartialTemp = true
			}
			if fi, err := os.Stat(final); err == nil && fi.Size() != size {
				badFinal = append(badFinal, fi.Size())
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	res := upload(t, newClient(t, tg, Options{Atomic: true}), items, Observer{})
	close(stop)
	wg.Wait()
	wantDelivered(t, items, res)
	wantNoTempFiles(t, remote)
	if len(badFinal) > 0 {
		t.Errorf("the final name was seen with sizes %v before it was complete", badFinal)
	}
	if !sawPartialTemp {
		t.Error("the reader never saw the transfer in progress: the test proves nothing")
	}
}
