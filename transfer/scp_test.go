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
	"testing"

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
	lb := &logBuffer{}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolSCP, ControlDir: controlDir(t), Logger: lb.logger()})
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
	lb := &logBuffer{}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, Protocol: ProtocolAuto, ControlDir: controlDir(t), Logger: lb.logger()})
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
	lb := &logBuffer{}
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t), Logger: lb.logger()})
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
	if err := c.Check(ctx, t.TempDir()); err != nil {
		t.Errorf("Check of a good folder: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wantClass(t, c.Check(ctx, file), ClassRemotePath, "Not a directory")
}
