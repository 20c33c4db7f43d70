package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sshdtest"
)

// The legacy scp protocol, against a real OpenSSH sshd without an SFTP
// subsystem and the real ssh client.

// wantSums fails unless each successful result's SHA256 is its file's.
func wantSums(t *testing.T, items []Item, res []Result) {
	t.Helper()
	for i, it := range items {
		if res[i].Err != nil {
			continue
		}
		data, err := os.ReadFile(it.Local)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if got := res[i].SHA256; got != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: sha256 %q, want %q", it.ID, got, hex.EncodeToString(sum[:]))
		}
	}
}

// Every name a Linux file may have arrives exactly through the remote shell's
// quoting: a POSIX shell reads back what shQuote wrote.
func TestSCPShellQuoting(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	names, _ := hostileNames("quote")
	names = append(names, "'", "''", `'\''`, "a'b'c", "\\'", "$(id)", "`id`", "*", "-n", "-e", "--")
	for _, n := range names {
		out, err := exec.Command(sh, "-c", "printf '%s' "+shQuote(n)).Output()
		if err != nil {
			t.Errorf("%q: %v", n, err)
			continue
		}
		if string(out) != n {
			t.Errorf("%q came back as %q", n, out)
		}
	}
}

// The command lines, step by step.
func TestSCPCommand(t *testing.T) {
	it := Item{ID: "id1", RemoteDir: "/in", Rel: "sub/it's.txt"}
	cases := []struct {
		name string
		plan scpPlan
		want string
	}{
		{"atomic", scpPlan{atomic: true, overwrite: true, shell: true, mkdir: true},
			`cd -- '/in' || exit 91; mkdir -p -- './sub' || exit 92; if test -d './sub/it'\''s.txt'; then exit 96; fi; ` +
				`scp -t -- './sub/.dropship-id1.part' || { rm -f -- './sub/.dropship-id1.part'; exit 93; }; ` +
				`mv -f -- './sub/.dropship-id1.part' './sub/it'\''s.txt' || { rm -f -- './sub/.dropship-id1.part'; exit 94; }`},
		{"no overwrite", scpPlan{atomic: true, shell: true},
			`cd -- '/in' || exit 91; if test -e './sub/it'\''s.txt' || test -L './sub/it'\''s.txt'; then exit 95; fi; if test -d './sub/it'\''s.txt'; then exit 96; fi; ` +
				`scp -t -- './sub/.dropship-id1.part' || { rm -f -- './sub/.dropship-id1.part'; exit 93; }; ` +
				`ln -- './sub/.dropship-id1.part' './sub/it'\''s.txt' || { rm -f -- './sub/.dropship-id1.part'; if test -e './sub/it'\''s.txt' || test -L './sub/it'\''s.txt'; then exit 95; fi; exit 97; }; rm -f -- './sub/.dropship-id1.part'; exit 0`},
		{"direct, preserve", scpPlan{overwrite: true, preserve: true, shell: true},
			`cd -- '/in' || exit 91; if test -d './sub/it'\''s.txt'; then exit 96; fi; scp -t -p -- './sub/it'\''s.txt' || exit 93`},
		{"no shell", scpPlan{overwrite: true}, `scp -t -r -- '/in'`},
	}
	for _, c := range cases {
		got, _, err := scpCommand(it, c.plan)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
	rel := it
	rel.RemoteDir = "-in"
	got, _, _ := scpCommand(rel, scpPlan{atomic: true, overwrite: true, shell: true})
	if !strings.HasPrefix(got, "cd -- './-in' || exit 91; ") {
		t.Errorf("relative remote_dir: %s", got)
	}
	if _, _, err := scpCommand(Item{ID: "x", RemoteDir: "/in", Rel: "a\nb"}, scpPlan{overwrite: true}); ClassOf(err) != ClassBadName {
		t.Errorf("a newline without a shell: %v", err)
	}
	if _, _, err := scpCommand(it, scpPlan{}); ClassOf(err) != ClassRemoteConfig {
		t.Errorf("overwrite = false without a shell: %v", err)
	}
}

// scpTarget is a real sshd without an SFTP subsystem and a target for it.
func scpTarget(t *testing.T, extra ...string) (*sshdtest.Server, Target) {
	t.Helper()
	return startSSHD(t, sshdtest.Options{NoSFTP: true, ExtraConfig: extra})
}

func TestSCPDeliveryRealSSHD(t *testing.T) {
	t.Parallel()
	srv, tg := scpTarget(t)
	home, _ := os.UserHomeDir()
	cwd, _ := os.Getwd()
	tag := fmt.Sprint(os.Getpid())
	names, canaries := hostileNames("scp" + tag)
	remote := t.TempDir()
	var items []Item
	for i, n := range names {
		items = append(items, localItem(t, fmt.Sprintf("h%02d", i), fmt.Sprintf("f%d", i), content(n, 100+i*7), remote, n))
	}
	// Subfolders, with hostile names of their own.
	items = append(items,
		localItem(t, "sub1", "s1", content("s1", 3000), remote, "a/b/c/deep.txt"),
		localItem(t, "sub2", "s2", content("s2", 10), remote, "we'ird $(touch "+canaries[0]+")/new\nline/-x"),
		localItem(t, "sub3", "s3", content("s3", 0), remote, "a/b/empty"),
		localItem(t, "big", "big", content("big", 3<<20+17), remote, "a/big.bin"),
	)
	lb := &syncBuffer{}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t), Logger: bufferLogger(lb)})
	rec := &recorder{}
	res := upload(t, c, items, rec.observer())
	wantDelivered(t, items, res)
	wantSums(t, items, res)
	wantNoTempFiles(t, remote)
	if t.Failed() {
		t.Logf("output:\n%s\nlog:\n%s", rec.text(), lb.String())
	}
	if got := c.Protocol(); !strings.HasPrefix(got, "scp (") || !strings.Contains(got, "atomic") {
		t.Errorf("Protocol() = %q", got)
	}
	// Sent again: overwritten in place.
	res = upload(t, c, items[:3], Observer{})
	wantDelivered(t, items[:3], res)
	for _, dir := range []string{home, cwd, "/", os.TempDir(), remote, srv.Dir} {
		for _, cn := range canaries {
			wantAbsent(t, filepath.Join(dir, cn))
		}
	}
	if strings.Contains(lb.String(), "SFTP") {
		t.Errorf("protocol = scp tried SFTP:\n%s", lb.String())
	}
}

// Check and the first upload are probed once.
func TestSCPAutoChoosesSCPWithoutSubsystem(t *testing.T) {
	t.Parallel()
	_, tg := scpTarget(t)
	remote := t.TempDir()
	lb := &syncBuffer{}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolAuto, ControlDir: controlDir(t), Logger: bufferLogger(lb)})
	ctx, cancel := context.WithTimeout(context.Background(), uploadDeadline)
	defer cancel()
	if err := c.Check(ctx, remote); err != nil {
		t.Fatalf("Check: %v\n%s", err, lb.String())
	}
	if got := c.Protocol(); !strings.Contains(got, "scp (the server has no SFTP subsystem") {
		t.Errorf("Protocol() = %q", got)
	}
	items := []Item{localItem(t, "a1", "a", content("a", 1000), remote, "a.txt"), localItem(t, "b1", "b", content("b", 10), remote, "s/b.txt")}
	res := upload(t, c, items, Observer{})
	wantDelivered(t, items, res)
	wantSums(t, items, res)
	log := lb.String()
	if n := strings.Count(log, "the server has no SFTP subsystem; using the legacy scp protocol"); n != 1 {
		t.Errorf("the fallback was logged %d times:\n%s", n, log)
	}
	if !strings.Contains(log, "target=sshd") {
		t.Errorf("the log does not name the target:\n%s", log)
	}
}

func TestSCPAutoKeepsSFTPWhereOffered(t *testing.T) {
	t.Parallel()
	_, tg := startSSHD(t, sshdtest.Options{})
	remote := t.TempDir()
	lb := &syncBuffer{}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t), Logger: bufferLogger(lb)})
	items := []Item{localItem(t, "a1", "a", content("a", 1000), remote, "a.txt")}
	res := upload(t, c, items, Observer{})
	wantDelivered(t, items, res)
	if got := c.Protocol(); got != ProtocolSFTP {
		t.Errorf("Protocol() = %q", got)
	}
	if log := lb.String(); !strings.Contains(log, "the server offers SFTP; using it") || strings.Contains(log, "legacy scp") {
		t.Errorf("log:\n%s", log)
	}
}

// protocol = "sftp" never falls back.
func TestSCPNeverWithProtocolSFTP(t *testing.T) {
	t.Parallel()
	_, tg := scpTarget(t)
	remote := t.TempDir()
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSFTP, ControlDir: controlDir(t)})
	items := []Item{localItem(t, "a1", "a", content("a", 10), remote, "a.txt")}
	res := upload(t, c, items, Observer{})
	wantClass(t, res[0].Err, ClassRemoteConfig, "the server has no SFTP subsystem but runs scp", `set protocol = "auto" or "scp"`)
	wantAbsent(t, items[0].RemotePath())
}

func TestSCPOverwriteFalseKeepsTheRemoteFile(t *testing.T) {
	t.Parallel()
	_, tg := scpTarget(t)
	remote := t.TempDir()
	if err := os.WriteFile(filepath.Join(remote, "taken.txt"), []byte("theirs"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: false, Protocol: ProtocolSCP, ControlDir: controlDir(t)})
	items := []Item{
		localItem(t, "t1", "t", content("t", 10), remote, "taken.txt"),
		localItem(t, "f1", "f", content("f", 10), remote, "free.txt"),
	}
	res := upload(t, c, items, Observer{})
	wantClass(t, res[0].Err, ClassRemoteExists, "taken.txt", "overwrite = false")
	wantDelivered(t, items[1:], res[1:])
	if b, _ := os.ReadFile(filepath.Join(remote, "taken.txt")); string(b) != "theirs" {
		t.Errorf("the existing file was replaced: %q", b)
	}
	wantNoTempFiles(t, remote)
}

// The remote scp's refusals, classified.
func TestSCPRemoteErrors(t *testing.T) {
	t.Parallel()
	_, tg := scpTarget(t)
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t)})
	ctx, cancel := context.WithTimeout(context.Background(), uploadDeadline)
	defer cancel()
	missing := filepath.Join(t.TempDir(), "missing")
	wantClass(t, c.Check(ctx, missing), ClassRemotePath, missing)
	res := upload(t, c, []Item{localItem(t, "m1", "m", content("m", 10), missing, "m.txt")}, Observer{})
	wantClass(t, res[0].Err, ClassRemotePath, missing)
	wantAbsent(t, missing)
	// A batch of them too.
	res = upload(t, c, []Item{localItem(t, "m2", "m2", content("m", 10), missing, "a/m.txt"), localItem(t, "m3", "m3", content("m", 10), missing, "a/n.txt")}, Observer{})
	wantClass(t, res[0].Err, ClassRemotePath, missing)
	wantClass(t, res[1].Err, ClassRemotePath, missing)
	wantAbsent(t, missing)

	// A folder the account may not write: as root, sysfs refuses new
	// files whatever the mode.
	denied := "/sys"
	if os.Geteuid() != 0 {
		denied = t.TempDir()
		if err := os.Chmod(denied, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	res = upload(t, c, []Item{localItem(t, "p1", "p", content("p", 10), denied, "p.txt")}, Observer{})
	wantClass(t, res[0].Err, ClassRemotePermission, "Permission denied")
	res = upload(t, c, []Item{localItem(t, "p2", "p2", content("p", 10), denied, "p.txt"), localItem(t, "p3", "p3", content("p", 10), denied, "q.txt")}, Observer{})
	wantClass(t, res[0].Err, ClassRemotePermission, "Permission denied")
	wantClass(t, res[1].Err, ClassRemotePermission)
	if err := c.Check(ctx, t.TempDir()); err != nil {
		t.Errorf("Check of a good folder: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wantClass(t, c.Check(ctx, file), ClassRemotePath, "Not a directory")
}

// onlySCP is a ForceCommand that allows scp and nothing else, as rssh and
// scponly do.
const onlySCP = `#!/bin/sh
case "$SSH_ORIGINAL_COMMAND" in
"scp -t "*) eval "exec $SSH_ORIGINAL_COMMAND" ;;
esac
echo "This account is restricted: only scp is allowed." >&2
exit 1
`

// An account that may run scp only: atomic delivery is refused with what to
// do, and with atomic = false files (subfolders too) are written directly.
func TestSCPWithoutAShell(t *testing.T) {
	t.Parallel()
	script := filepath.Join(t.TempDir(), "onlyscp")
	if err := os.WriteFile(script, []byte(onlySCP), 0o755); err != nil {
		t.Fatal(err)
	}
	_, tg := scpTarget(t, "ForceCommand "+script)
	remote := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), uploadDeadline)
	defer cancel()

	atomic := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t)})
	wantClass(t, atomic.Check(ctx, remote), ClassRemoteConfig, "set atomic = false", "only scp")
	res := upload(t, atomic, []Item{localItem(t, "a1", "a", content("a", 10), remote, "a.txt")}, Observer{})
	wantClass(t, res[0].Err, ClassRemoteConfig, "set atomic = false")
	if res[0].Began {
		t.Error("an upload that cannot be atomic began")
	}
	wantAbsent(t, filepath.Join(remote, "a.txt"))

	c := newClient(t, tg, Options{Atomic: false, Overwrite: true, ControlDir: controlDir(t)})
	if err := c.Check(ctx, remote); err != nil {
		t.Fatalf("Check with atomic = false: %v", err)
	}
	if got := c.Protocol(); !strings.Contains(got, "cannot be atomic") {
		t.Errorf("Protocol() = %q", got)
	}
	if err := os.WriteFile(filepath.Join(remote, "old.txt"), []byte("an older version, longer than the new one"), 0o644); err != nil {
		t.Fatal(err)
	}
	items := []Item{
		localItem(t, "t1", "t", content("t", 1000), remote, "top level.txt"),
		localItem(t, "t2", "u", content("u", 5000), remote, "a/b c/it's $(x).txt"),
		localItem(t, "t3", "v", content("v", 20), remote, "old.txt"),
		localItem(t, "t4", "w", content("w", 20), remote, "new\nline.txt"),
	}
	res = upload(t, c, items, Observer{})
	wantDelivered(t, items[:3], res[:3])
	wantSums(t, items[:3], res[:3])
	wantClass(t, res[3].Err, ClassBadName, "newline")
	wantNoTempFiles(t, remote)

	nover := newClient(t, tg, Options{Atomic: false, Overwrite: false, ControlDir: controlDir(t)})
	res = upload(t, nover, []Item{localItem(t, "n1", "n", content("n", 20), remote, "n.txt")}, Observer{})
	wantClass(t, res[0].Err, ClassRemoteConfig, "overwrite = false")
}

// Under its final name a file is only ever complete: it is written under its
// temporary name and renamed by mv.
func TestSCPAtomicDeliveryIsNeverSeenPartial(t *testing.T) {
	t.Parallel()
	_, tg := scpTarget(t)
	remote := t.TempDir()
	const size = 2 << 20
	items := []Item{
		localItem(t, "big", "big.bin", content("big", size), remote, "a/b/big.bin"),
		localItem(t, "small", "small.txt", content("small", 100), remote, "a/other/small.txt"),
	}
	final, temp := items[0].RemotePath(), items[0].TempPath()
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
	// 4 MiB/s: the big file takes half a second.
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, Bandwidth: 4 << 20, ControlDir: controlDir(t)})
	res := upload(t, c, items, Observer{})
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

// A file that changes while it is sent is not delivered, and what was sent of
// it is removed.
func TestSCPLocalChangeIsNotDelivered(t *testing.T) {
	t.Parallel()
	_, tg := scpTarget(t)
	remote := t.TempDir()
	it := localItem(t, "ch", "changing.bin", content("changing", 2<<20), remote, "changing.bin")
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, Bandwidth: 4 << 20, ControlDir: controlDir(t)})
	done := make(chan []Result, 1)
	go func() { done <- c.Upload(context.Background(), []Item{it}, Observer{}) }()
	poll(t, 20*time.Second, "the temporary file", func() bool {
		_, err := os.Stat(it.TempPath())
		return err == nil
	})
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(it.Local, later, later); err != nil {
		t.Fatal(err)
	}
	res := <-done
	wantClass(t, res[0].Err, ClassLocalChanged, "changed while it was being sent")
	wantAbsent(t, it.RemotePath())
	poll(t, 10*time.Second, "the temporary file removed", func() bool { return len(tempFiles(t, remote)) == 0 })
}

// preserve = true keeps the mtime and mode.
func TestSCPPreserve(t *testing.T) {
	t.Parallel()
	_, tg := scpTarget(t)
	remote := t.TempDir()
	it := localItem(t, "p1", "p", content("p", 300), remote, "kept.txt")
	when := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(it.Local, when, when); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(it.Local, 0o640); err != nil {
		t.Fatal(err)
	}
	// A second small file in the same folder: with atomic, both go in
	// one batch.
	it2 := localItem(t, "p2", "p2", content("p2", 30), remote, "kept2.txt")
	if err := os.Chtimes(it2.Local, when, when); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(it2.Local, 0o640); err != nil {
		t.Fatal(err)
	}
	for _, atomic := range []bool{true, false} {
		c := newClient(t, tg, Options{Atomic: atomic, Overwrite: true, Preserve: true, Protocol: ProtocolSCP, ControlDir: controlDir(t)})
		for _, items := range [][]Item{{it}, {it, it2}} {
			res := upload(t, c, items, Observer{})
			wantDelivered(t, items, res)
			for _, x := range items {
				fi, err := os.Stat(x.RemotePath())
				if err != nil {
					t.Fatal(err)
				}
				if !fi.ModTime().Equal(when) || fi.Mode().Perm() != 0o640 {
					t.Errorf("atomic %v, %d files: remote mtime %s mode %v, want %s 0640", atomic, len(items), fi.ModTime(), fi.Mode().Perm(), when)
				}
				if err := os.Remove(x.RemotePath()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// Many small files go over several sessions at once; a server that allows
// fewer sessions than that (MaxSessions 2) gets fewer, and every file
// arrives.
func TestSCPManyFilesFewSessions(t *testing.T) {
	t.Parallel()
	_, tg := startSSHD(t, sshdtest.Options{NoSFTP: true, MaxSessions: 2})
	remote := t.TempDir()
	var items []Item
	for i := range 40 {
		items = append(items, localItem(t, fmt.Sprintf("m%02d", i), fmt.Sprintf("f%d", i), content(fmt.Sprint(i), 500+i), remote, fmt.Sprintf("d%d/f%02d.txt", i%3, i)))
	}
	lb := &syncBuffer{}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t), Logger: bufferLogger(lb)})
	res := upload(t, c, items, Observer{})
	wantDelivered(t, items, res)
	wantSums(t, items, res)
	wantNoTempFiles(t, remote)
	if t.Failed() || testing.Verbose() {
		t.Logf("log:\n%s", lb.String())
	}
}

// hangSCP is a ForceCommand under which a shell works but scp never answers.
const hangSCP = `#!/bin/sh
case "$SSH_ORIGINAL_COMMAND" in
"echo "*) eval "$SSH_ORIGINAL_COMMAND"; exit ;;
esac
exec sleep 600
`

// A remote scp that never answers is a stall, killed after stall_timeout;
// a canceled upload ends at once.
func TestSCPStallAndCancel(t *testing.T) {
	t.Parallel()
	script := filepath.Join(t.TempDir(), "hang")
	if err := os.WriteFile(script, []byte(hangSCP), 0o755); err != nil {
		t.Fatal(err)
	}
	_, tg := scpTarget(t, "ForceCommand "+script)
	tg.StallTimeout = time.Second
	remote := t.TempDir()
	stalled := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t)})
	start := time.Now()
	res := upload(t, stalled, []Item{localItem(t, "s1", "s", content("s", 10), remote, "s.txt")}, Observer{})
	wantClass(t, res[0].Err, ClassStalled, "no answer from the server for 1s")
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the stall took %s to be noticed", d)
	}

	tg.StallTimeout = time.Minute
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []Result, 1)
	it := localItem(t, "s2", "s", content("s", 10), remote, "s.txt")
	go func() { done <- c.Upload(ctx, []Item{it}, Observer{}) }()
	// Canceled once the shell was probed: while scp does not answer.
	poll(t, 20*time.Second, "the probe", func() bool { return c.Protocol() != "" && strings.Contains(c.Protocol(), "atomic") })
	cancel()
	select {
	case res = <-done:
		wantClass(t, res[0].Err, ClassCanceled)
	case <-time.After(10 * time.Second):
		t.Fatal("a canceled upload did not end")
	}
	wantAbsent(t, filepath.Join(remote, "s.txt"))
	// Every ssh it started is gone once the clients are closed.
	stalled.Close()
	c.Close()
	poll(t, 10*time.Second, "no ssh left", func() bool { return len(clientsFor(tg.Port)) == 0 })
}

// A connection lost mid-file is lost-connection (retryable), and nothing is
// under the final name.
func TestSCPLostConnection(t *testing.T) {
	t.Parallel()
	srv, tg := scpTarget(t)
	remote := t.TempDir()
	it := localItem(t, "l1", "l", content("l", 4<<20), remote, "l.bin")
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, Bandwidth: 1 << 20, ControlDir: controlDir(t)})
	done := make(chan []Result, 1)
	go func() { done <- c.Upload(context.Background(), []Item{it}, Observer{}) }()
	poll(t, 20*time.Second, "the temporary file", func() bool {
		_, err := os.Stat(it.TempPath())
		return err == nil
	})
	srv.Stop()
	res := <-done
	wantClass(t, res[0].Err, ClassLostConnection)
	if !ClassOf(res[0].Err).Retryable() {
		t.Error("a lost connection is not retryable")
	}
	wantAbsent(t, it.RemotePath())
}

// Discard removes what failed attempts left, over scp too.
func TestSCPDiscard(t *testing.T) {
	t.Parallel()
	_, tg := scpTarget(t)
	remote := t.TempDir()
	items := []Item{
		localItem(t, "d1", "d", content("d", 10), remote, "d.txt"),
		localItem(t, "d2", "e", content("e", 10), remote, "sub/it's.txt"),
	}
	for _, it := range items {
		if err := os.MkdirAll(filepath.Dir(it.TempPath()), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(it.TempPath(), []byte("left"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t)})
	ctx, cancel := context.WithTimeout(context.Background(), uploadDeadline)
	defer cancel()
	if err := c.Discard(ctx, items); err != nil {
		t.Fatal(err)
	}
	wantNoTempFiles(t, remote)
}

// A server with a shell but no scp program says so.
func TestSCPNoSCPProgram(t *testing.T) {
	t.Parallel()
	script := filepath.Join(t.TempDir(), "noscp")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nPATH=/nonexistent\neval \"$SSH_ORIGINAL_COMMAND\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, tg := scpTarget(t, "ForceCommand "+script)
	remote := t.TempDir()
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t)})
	res := upload(t, c, []Item{localItem(t, "n1", "n", content("n", 10), remote, "n.txt")}, Observer{})
	wantClass(t, res[0].Err, ClassRemoteConfig, "no scp program")
	wantAbsent(t, filepath.Join(remote, "n.txt"))
}

// A folder where the file should go fails that file alone, with or without a
// shell on the server.
func TestSCPFolderInTheWay(t *testing.T) {
	t.Parallel()
	script := filepath.Join(t.TempDir(), "onlyscp")
	if err := os.WriteFile(script, []byte(onlySCP), 0o755); err != nil {
		t.Fatal(err)
	}
	_, shell := scpTarget(t)
	_, noShell := scpTarget(t, "ForceCommand "+script)
	for _, tc := range []struct {
		name   string
		tg     Target
		atomic bool
	}{{"shell", shell, true}, {"no shell", noShell, false}} {
		remote := t.TempDir()
		if err := os.Mkdir(filepath.Join(remote, "taken"), 0o755); err != nil {
			t.Fatal(err)
		}
		c := newClient(t, tc.tg, Options{Atomic: tc.atomic, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t)})
		items := []Item{
			localItem(t, "f1", "f", content("f", 10), remote, "taken"),
			localItem(t, "f2", "g", content("g", 10), remote, "free.txt"),
		}
		res := upload(t, c, items, Observer{})
		e := wantClass(t, res[0].Err, ClassRemoteExists)
		if !strings.Contains(e.Message, "is a folder") && !strings.Contains(e.Message, "Is a directory") {
			t.Errorf("%s: %v", tc.name, e)
		}
		wantDelivered(t, items[1:], res[1:])
		if fi, err := os.Stat(filepath.Join(remote, "taken")); err != nil || !fi.IsDir() {
			t.Errorf("%s: the folder in the way was touched: %v", tc.name, err)
		}
		wantNoTempFiles(t, remote)
	}
}

// In a batch of small files, one that changes after its bytes were read, or
// shrinks while they are, fails alone; the others arrive, and nothing is left
// under a temporary name. (Not parallel: it sets the batch hook.)
func TestSCPBatchLocalChanges(t *testing.T) {
	_, tg := scpTarget(t)
	remote := t.TempDir()
	var items []Item
	for _, n := range []string{"a", "changed", "b", "shrunk", "c"} {
		items = append(items, localItem(t, n, n, content(n, 5000), remote, "sub/"+n+".txt"))
	}
	testBatchHook = func(it Item, when string) {
		switch {
		case it.ID == "changed" && when == "after":
			later := time.Now().Add(time.Hour)
			_ = os.Chtimes(it.Local, later, later)
		case it.ID == "shrunk" && when == "before":
			_ = os.Truncate(it.Local, 10)
		}
	}
	t.Cleanup(func() { testBatchHook = nil })
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t)})
	res := upload(t, c, items, Observer{})
	wantClass(t, res[1].Err, ClassLocalChanged, "changed while it was being sent")
	wantClass(t, res[3].Err, ClassLocalChanged, "shorter")
	ok := []Item{items[0], items[2], items[4]}
	wantDelivered(t, ok, []Result{res[0], res[2], res[4]})
	wantSums(t, ok, []Result{res[0], res[2], res[4]})
	wantAbsent(t, items[1].RemotePath())
	wantAbsent(t, items[3].RemotePath())
	poll(t, 10*time.Second, "no temporary files", func() bool { return len(tempFiles(t, remote)) == 0 })
}
