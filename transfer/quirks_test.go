package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
	"github.com/pkg/sftp"
)

// The engine against servers that are not OpenSSH's sftp-server (issue 11
// point 4): the built-in server with internal/sftpd's Quirks. What the user
// sees is the same everywhere: a file is delivered whole under its final
// name, or fails with the class that says why, and an existing remote file
// is replaced only with overwrite = true.

// quirkServer runs the built-in server with quirks q and faults f, and
// returns it with a key target for it.
func quirkServer(t *testing.T, q sftpd.Quirks, f sftpd.Faults) (*sftpd.Server, Target) {
	t.Helper()
	acct, key := keyAccount(t)
	srv, tg := startSFTPD(t, acct, sftpd.Config{Quirks: q, Faults: f})
	tg.Identity = key
	return srv, tg
}

// kinds is the kinds of ops, in order, for failure messages and checks.
func kinds(ops []sftpd.Op) []string {
	var out []string
	for _, op := range ops {
		k := op.Kind
		if op.Err != nil {
			k += "!"
		}
		out = append(out, k)
	}
	return out
}

// countOps counts the ops of kind in ops; failed ones when failed, else the
// successful ones.
func countOps(ops []sftpd.Op, kind string, failed bool) int {
	n := 0
	for _, op := range ops {
		if op.Kind == kind && (op.Err != nil) == failed {
			n++
		}
	}
	return n
}

// writeRemote puts data at p on the built-in server's file system, as
// another user of the server would.
func writeRemote(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// wantContent fails unless p holds data.
func wantContent(t *testing.T, p string, data []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Error(err)
		return
	}
	if !bytes.Equal(got, data) {
		t.Errorf("%s: %d bytes that are not the %d expected", p, len(got), len(data))
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Renames on servers with and without posix-rename: overwrite = true
// replaces an existing file (posix-rename, or a plain rename after removing
// the old file), overwrite = false never does, whether the file was there
// before the upload or appeared during it (a plain rename onto it is refused:
// "file exists"), and then the temporary file is removed.
func TestRenameSemantics(t *testing.T) {
	t.Parallel()
	servers := []struct {
		name  string
		q     sftpd.Quirks
		posix bool // posix-rename is offered
	}{
		{"default", sftpd.Quirks{}, true},
		{"no posix-rename", sftpd.Quirks{NoPosixRename: true}, false},
		{"no extensions", sftpd.Quirks{NoExtensions: true}, false},
	}
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			t.Parallel()
			srv, tg := quirkServer(t, sv.q, sftpd.Faults{})
			over := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t)})
			keep := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t)})

			t.Run("overwrite replaces", func(t *testing.T) {
				remote := t.TempDir()
				old := []byte("the old content")
				items := []Item{
					localItem(t, "rep", "rep.txt", content("rep", 3000), remote, "rep.txt"),
					localItem(t, "new", "new.txt", content("new", 3000), remote, "sub/new.txt"),
				}
				writeRemote(t, items[0].RemotePath(), old)
				wantDelivered(t, items, upload(t, over, items, Observer{}))
				wantNoTempFiles(t, remote)
				rep, fresh := srv.OpsOn(items[0].RemotePath()), srv.OpsOn(items[1].RemotePath())
				t.Logf("ops on the replaced file: %v; on the new one: %v", kinds(rep), kinds(fresh))
				if sv.posix {
					if countOps(rep, sftpd.OpPosixRename, false) != 1 || countOps(rep, sftpd.OpRemove, false) != 0 {
						t.Errorf("replaced file: ops %v, want one posix-rename and no remove", kinds(rep))
					}
					return
				}
				if n := countOps(srv.Ops(), sftpd.OpPosixRename, false) + countOps(srv.Ops(), sftpd.OpPosixRename, true); n != 0 {
					t.Errorf("%d posix-renames sent to a server that does not offer it", n)
				}
				// Refused over the old file, which is removed, then
				// the rename again.
				if countOps(rep, sftpd.OpRemove, false) != 1 || countOps(rep, sftpd.OpRename, false) != 1 {
					t.Errorf("replaced file: ops %v, want a remove and a successful rename", kinds(rep))
				}
				if countOps(fresh, sftpd.OpRemove, false) != 0 || countOps(fresh, sftpd.OpRename, false) != 1 || countOps(fresh, sftpd.OpRename, true) != 0 {
					t.Errorf("new file: ops %v, want one rename and no remove", kinds(fresh))
				}
			})

			t.Run("no overwrite keeps an existing file", func(t *testing.T) {
				remote := t.TempDir()
				old := []byte("someone else's file")
				items := []Item{
					localItem(t, "ex", "ex.txt", content("ex", 3000), remote, "ex.txt"),
					localItem(t, "ok", "ok.txt", content("ok", 3000), remote, "ok.txt"),
				}
				writeRemote(t, items[0].RemotePath(), old)
				res := upload(t, keep, items, Observer{})
				wantClass(t, res[0].Err, ClassRemoteExists, items[0].RemotePath())
				if res[0].Began {
					t.Error("Began is true: nothing should have been sent")
				}
				wantContent(t, items[0].RemotePath(), old)
				if ops := srv.OpsOn(items[0].TempPath()); len(ops) != 0 {
					t.Errorf("the temporary file was touched: %v", kinds(ops))
				}
				// The other file of the batch is not held up.
				wantDelivered(t, items[1:], res[1:])
				wantNoTempFiles(t, remote)
			})

			t.Run("no overwrite keeps a file that appears during the upload", func(t *testing.T) {
				remote := t.TempDir()
				theirs := []byte("appeared while ours was being written")
				items := []Item{
					localItem(t, "race", "race.bin", content("race", 300<<10), remote, "race.bin"),
					localItem(t, "calm", "calm.txt", content("calm", 100), remote, "calm.txt"),
				}
				obs := Observer{Begin: func(id string) {
					if id == "race" {
						writeRemote(t, items[0].RemotePath(), theirs)
					}
				}}
				res := upload(t, keep, items, obs)
				wantClass(t, res[0].Err, ClassRemoteExists, items[0].RemotePath())
				if !res[0].Began {
					t.Error("Began is false, but the file was being sent")
				}
				wantContent(t, items[0].RemotePath(), theirs)
				ops := srv.OpsOn(items[0].RemotePath())
				if countOps(ops, sftpd.OpRename, true) != 1 || countOps(ops, sftpd.OpRename, false) != 0 || countOps(ops, sftpd.OpPosixRename, false) != 0 || countOps(ops, sftpd.OpRemove, false) != 0 {
					t.Errorf("ops on the final name %v: want one refused plain rename, nothing removed or replaced", kinds(ops))
				}
				wantDelivered(t, items[1:], res[1:])
				wantNoTempFiles(t, remote)
			})
		})
	}
}

// A server that refuses SETSTAT (permission denied, or unsupported): the
// engine does not depend on it, so files are delivered.
func TestSetstatRefused(t *testing.T) {
	t.Parallel()
	for _, q := range []sftpd.Quirks{{DenySetstat: true}, {SetstatUnsupported: true}} {
		srv, tg := quirkServer(t, q, sftpd.Faults{})
		remote := t.TempDir()
		items := []Item{
			localItem(t, "s1", "s1.txt", content("s1", 100), remote, "s1.txt"),
			localItem(t, "s2", "s2.bin", content("s2", 1<<20), remote, "deep/er/s2.bin"),
			localItem(t, "s3", "s3.txt", nil, remote, "s3.txt"),
			localItem(t, "s4", "s4.txt", content("s4", 5000), remote, "s4.txt"),
		}
		writeRemote(t, items[3].RemotePath(), []byte("old"))
		c := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t)})
		wantDelivered(t, items, upload(t, c, items, Observer{}))
		wantNoTempFiles(t, remote)
		t.Logf("%+v: %d setstat requests", q, srv.Stats().Setstats)
	}
}

// A partner's pickup process takes each file as soon as it is renamed into
// place: the upload succeeded (it is not retried, it is not a failure), and
// what was picked up is exactly what was sent.
func TestFileGoneRightAfterItsRename(t *testing.T) {
	t.Parallel()
	pickup := t.TempDir()
	srv, tg := quirkServer(t, sftpd.Quirks{PickUpRenamed: true, PickupDir: pickup}, sftpd.Faults{})
	remote := t.TempDir()
	for _, overwrite := range []bool{false, true} {
		c := newClient(t, tg, Options{Atomic: true, Overwrite: overwrite, ControlDir: controlDir(t)})
		var items []Item
		for i, size := range []int{10, 70 << 10, 600 << 10} {
			id := fmt.Sprintf("pk%v%d", overwrite, i)
			items = append(items, localItem(t, id, id+".dat", content(id, size), remote, "in/"+id+".dat"))
		}
		res := upload(t, c, items, Observer{})
		for i, it := range items {
			if res[i].Err != nil {
				t.Errorf("overwrite=%v %s: %v", overwrite, it.ID, res[i].Err)
				continue
			}
			want, _ := os.ReadFile(it.Local)
			if res[i].SHA256 != sha256Hex(want) {
				t.Errorf("%s: SHA256 %s, want %s", it.ID, res[i].SHA256, sha256Hex(want))
			}
			wantContent(t, filepath.Join(pickup, filepath.Base(it.Rel)), want)
			wantAbsent(t, it.RemotePath())
		}
	}
	if st := srv.Stats(); st.PickedUp != 6 {
		t.Errorf("%d files picked up, want 6", st.PickedUp)
	}
	wantNoTempFiles(t, remote)
}

// A server that reports less free space than a file needs: remote-full
// before a byte is sent (the temporary file is never opened). A file that
// fits is delivered; without statvfs the engine cannot know, and sends.
func TestFreeSpaceTooSmall(t *testing.T) {
	t.Parallel()
	const free = 100 << 10
	for _, fs := range []int64{free, -1} {
		srv, tg := quirkServer(t, sftpd.Quirks{FreeSpace: fs}, sftpd.Faults{})
		c := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t)})
		remote := t.TempDir()
		big := []Item{localItem(t, "big", "big.bin", content("big", 1<<20), remote, "big.bin")}
		res := upload(t, c, big, Observer{})
		wantClass(t, res[0].Err, ClassRemoteFull, "nothing was sent")
		if res[0].Began {
			t.Error("Began is true: nothing should have been sent")
		}
		if ops := srv.OpsOn(big[0].TempPath()); countOps(ops, sftpd.OpOpen, false)+countOps(ops, sftpd.OpOpen, true) != 0 {
			t.Errorf("FreeSpace %d: the temporary file was opened: %v", fs, kinds(ops))
		}
		if srv.Stats().StatVFS == 0 {
			t.Error("no statvfs request: the test proves nothing")
		}
		wantAbsent(t, big[0].RemotePath())
		wantNoTempFiles(t, remote)
		if fs > 0 {
			small := []Item{localItem(t, "small", "small.bin", content("small", free/2), remote, "small.bin")}
			wantDelivered(t, small, upload(t, c, small, Observer{}))
		}
	}
	srv, tg := quirkServer(t, sftpd.Quirks{FreeSpace: free, NoStatVFS: true}, sftpd.Faults{})
	remote := t.TempDir()
	big := []Item{localItem(t, "big", "big.bin", content("big", 1<<20), remote, "big.bin")}
	wantDelivered(t, big, upload(t, newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t)}), big, Observer{}))
	if n := srv.Stats().StatVFS; n != 0 {
		t.Errorf("%d statvfs requests to a server that does not offer it", n)
	}
}

// fsync@openssh.com, when offered, is sent for each file after its data and
// before its rename; without it files are delivered all the same.
func TestFSyncBeforeRename(t *testing.T) {
	t.Parallel()
	for _, q := range []sftpd.Quirks{{}, {NoFSync: true}} {
		srv, tg := quirkServer(t, q, sftpd.Faults{})
		remote := t.TempDir()
		var items []Item
		for i, size := range []int{0, 100, 1 << 20} {
			id := fmt.Sprintf("fs%d", i)
			items = append(items, localItem(t, id, id+".dat", content(id, size), remote, id+".dat"))
		}
		for _, overwrite := range []bool{false, true} {
			c := newClient(t, tg, Options{Atomic: true, Overwrite: overwrite, ControlDir: controlDir(t)})
			wantDelivered(t, items, upload(t, c, items, Observer{}))
			for _, it := range items {
				ops := srv.OpsOn(it.TempPath())
				fsync, rename := -1, -1
				for j, op := range ops {
					switch {
					case op.Kind == sftpd.OpFSync && op.Err == nil:
						fsync = j
					case op.Kind == sftpd.OpRename || op.Kind == sftpd.OpPosixRename:
						rename = j
					}
				}
				switch {
				case q.NoFSync && fsync >= 0:
					t.Errorf("%s: fsync sent to a server that does not offer it: %v", it.ID, kinds(ops))
				case !q.NoFSync && (fsync < 0 || rename < fsync):
					t.Errorf("overwrite=%v %s: ops %v: want fsync before the rename", overwrite, it.ID, kinds(ops))
				}
			}
			wantNoTempFiles(t, remote)
		}
		t.Logf("%+v: %d fsyncs", q, srv.Stats().FSyncs)
	}
}

// Files are pipelined: many small files in one upload, on a server that
// takes writeDelay for every write, overlap instead of each waiting for the
// one before. Each file is one write request, so the writes the server was
// serving at once are files in flight; the server serves at most
// sftp.SftpServerWorkerCount requests of a session at once, and a client
// that keeps many files in flight fills at least half of them. (The time
// taken is logged, not asserted: a loaded machine stretches it.)
func TestManySmallFilesOverlap(t *testing.T) {
	t.Parallel()
	const n = 300
	const writeDelay = 40 * time.Millisecond
	srv, tg := quirkServer(t, sftpd.Quirks{}, sftpd.Faults{WriteDelay: writeDelay})
	tg.Connections = 1 // one session: the overlap is within it
	c := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t)})
	remote := t.TempDir()
	var items []Item
	for i := range n {
		id := fmt.Sprintf("m%03d", i)
		items = append(items, localItem(t, id, id+".txt", content(id, 1000+i), remote, fmt.Sprintf("d%d/%s.txt", i%5, id)))
	}
	// Log in and open the session first: the figure is the files' alone.
	warm := []Item{localItem(t, "warm", "warm.txt", content("warm", 10), remote, "warm.txt")}
	wantDelivered(t, warm, upload(t, c, warm, Observer{}))
	if got := srv.Stats().MaxWritesInFlight; got != 1 {
		t.Fatalf("one file of one write: %d writes in flight at once, want 1", got)
	}

	start := time.Now()
	res := upload(t, c, items, Observer{})
	took := time.Since(start)
	wantDelivered(t, items, res)
	wantNoTempFiles(t, remote)
	st := srv.Stats()
	t.Logf("%d files with a %s write delay: %s (one after the other: at least %s; the server's best: %s); at most %d writes in flight",
		n, writeDelay, took.Round(time.Millisecond), n*writeDelay, n*writeDelay/sftp.SftpServerWorkerCount, st.MaxWritesInFlight)
	if want := sftp.SftpServerWorkerCount / 2; st.MaxWritesInFlight < want {
		t.Errorf("at most %d writes of different files in flight at once, want at least %d: files do not overlap", st.MaxWritesInFlight, want)
	}
	if st.Sessions != 1 {
		t.Errorf("%d SFTP sessions, want 1", st.Sessions)
	}
}

// The shared connection dies while many files are being renamed: the server
// may have done renames it never answered. Whatever the engine reports is
// what the server holds: a file reported delivered is under its final name
// with its content, a file reported failed is not (and is not begun again
// by a retry that finds it there), and no temporary file is left.
func TestUnansweredRenames(t *testing.T) {
	t.Parallel()
	srv, tg := quirkServer(t, sftpd.Quirks{}, sftpd.Faults{})
	dir := controlDir(t)
	c := newClient(t, tg, Options{Atomic: true, ControlDir: dir})
	renames := func() int { st := srv.Stats(); return st.Renames + st.PosixRenames }
	// Where the kill lands is up to the scheduler: until it lands among
	// the renames, again (every attempt checks what the engine reports).
	for attempt := range 5 {
		remote := t.TempDir()
		var items []Item
		for i := range 200 {
			id := fmt.Sprintf("u%d-%03d", attempt, i)
			items = append(items, localItem(t, id, id+".txt", content(id, 100+i), remote, id+".txt"))
		}
		// Log in first, so that the kill comes in the middle of the files.
		warm := []Item{localItem(t, fmt.Sprint("warm", attempt), "warm.txt", content("warm", 10), remote, "warm.txt")}
		wantDelivered(t, warm, upload(t, c, warm, Observer{}))
		ms := masters(dir)
		if len(ms) != 1 {
			t.Fatalf("shared connections %+v, want 1", ms)
		}
		base := renames()
		killed := make(chan int, 1)
		go func() {
			deadline := time.Now().Add(uploadDeadline)
			for renames() < base+20 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			_ = syscall.Kill(ms[0].pid, syscall.SIGKILL)
			killed <- renames() - base
		}()
		res := upload(t, c, items, Observer{})
		atKill := <-killed
		delivered, failed := 0, 0
		for i, it := range items {
			if res[i].Err == nil {
				delivered++
				wantRemote(t, it)
				continue
			}
			failed++
			if cl := ClassOf(res[i].Err); cl != ClassLostConnection {
				t.Errorf("%s: class %s, want lost-connection: %v", it.ID, cl, res[i].Err)
			}
			wantAbsent(t, it.RemotePath())
		}
		renamed := renames() - base
		t.Logf("attempt %d: killed after %d renames; %d delivered, %d failed; the server did %d renames", attempt, atKill, delivered, failed, renamed)
		if renamed != delivered {
			t.Errorf("the server renamed %d files, the engine reports %d delivered", renamed, delivered)
		}
		wantNoTempFiles(t, remote)
		// The renames the server did after the kill were never
		// answered: the engine learned of them afterwards.
		if renamed > atKill || t.Failed() {
			return
		}
	}
	t.Error("no rename was done after the kill in 5 attempts: the test proves nothing")
}
