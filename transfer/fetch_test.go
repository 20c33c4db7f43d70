package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// fetchDeadline bounds every call of these tests.
const fetchDeadline = time.Minute

func fetchCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fetchDeadline)
	t.Cleanup(cancel)
	return ctx
}

// writeSource writes data at rel below dir (the server's side), with mtime
// mt, and returns its path.
func writeSource(t *testing.T, dir, rel string, data []byte, mt time.Time) string {
	t.Helper()
	p := filepath.Join(dir, rel)
	writeRemote(t, p, data)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	return p
}

// listed returns the entry of rel in ls, failing when there is none.
func listed(t *testing.T, ls []Listed, rel string) Listed {
	t.Helper()
	for _, l := range ls {
		if l.Rel == rel {
			return l
		}
	}
	t.Fatalf("%q is not in the listing %q", rel, rels(ls))
	return Listed{}
}

func rels(ls []Listed) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Rel)
	}
	return out
}

// Against OpenSSH's sshd: a partner's folder is listed (regular files only:
// not the symlink to /etc/passwd, not the folder when not recursive), every
// name arrives byte for byte (spaces, quotes, $(…), a leading dash, a
// newline), and each file is fetched whole, with the sha256 of its bytes
// and its mtime, into the spool, leaving no temporary file.
func TestListAndFetchOnRealSSHD(t *testing.T) {
	t.Parallel()
	_, tg := startSSHD(t, sshdtest.Options{})
	c := newClient(t, tg, Options{})
	src, spool := t.TempDir(), t.TempDir()
	mt := time.Date(2026, 11, 30, 8, 15, 0, 0, time.UTC)
	files := map[string][]byte{
		"report.csv":         content("report", 4096),
		"with space 'q'.txt": content("space", 10),
		"$(touch pwned)":     content("subst", 1),
		"-rf":                content("dash", 3),
		"line\nbreak":        content("nl", 7),
		"empty":              nil,
		"big.bin":            content("big", 5<<20+17),
		"sub/inner.txt":      content("inner", 100),
	}
	for rel, data := range files {
		writeSource(t, src, rel, data, mt)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(src, "passwd")); err != nil {
		t.Fatal(err)
	}
	ctx := fetchCtx(t)

	top, err := c.List(ctx, src, false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(rels(top), "|"), "$(touch pwned)|-rf|big.bin|empty|line\nbreak|report.csv|with space 'q'.txt"; got != want {
		t.Errorf("listing %q, want %q", got, want)
	}
	all, err := c.List(ctx, src, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(files) {
		t.Fatalf("recursive listing %q, want the %d files", rels(all), len(files))
	}

	var items []Fetch
	for _, l := range all {
		if l.Size != int64(len(files[l.Rel])) || !l.ModTime.Equal(mt) || !l.Mode.IsRegular() {
			t.Errorf("%q listed as %d bytes, %v, %v; want %d bytes, %v, a regular file", l.Rel, l.Size, l.ModTime, l.Mode, len(files[l.Rel]), mt)
		}
		local := filepath.Join(spool, hex.EncodeToString([]byte(l.Rel)))
		items = append(items, Fetch{RemoteDir: src, Listed: l, Local: local})
	}
	res := c.Download(ctx, items)
	for i, r := range res {
		it := items[i]
		if r.Err != nil {
			t.Errorf("%q: %v", it.Rel, r.Err)
			continue
		}
		want := files[it.Rel]
		got, err := os.ReadFile(it.Local)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%q fetched as %d bytes (%v), want its %d", it.Rel, len(got), err, len(want))
		}
		sum := sha256.Sum256(want)
		if r.SHA256 != hex.EncodeToString(sum[:]) || r.Bytes != int64(len(want)) {
			t.Errorf("%q: sha256 %s over %d bytes, want %x over %d", it.Rel, r.SHA256, r.Bytes, sum, len(want))
		}
		if fi, err := os.Stat(it.Local); err != nil || !fi.ModTime().Equal(mt) || fi.Mode().Perm() != 0o600 {
			t.Errorf("%q in the spool: %v, want mtime %v and mode 0600", it.Rel, fi, mt)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(spool, ".dropship-fetch-*")); len(left) > 0 {
		t.Errorf("temporary files left in the spool: %q", left)
	}
	if _, err := os.Stat(filepath.Join(src, "pwned")); err == nil {
		t.Error("a file name was run by a shell")
	}
}

// A file rewritten on the server after it was listed, or while it is
// fetched, is not fetched: source-changed, and nothing under its local name
// nor a temporary file left in the spool.
func TestFetchOfAChangedSourceKeepsNothing(t *testing.T) {
	t.Parallel()
	_, tg := startSSHD(t, sshdtest.Options{})
	c := newClient(t, tg, Options{})
	src, spool := t.TempDir(), t.TempDir()
	mt := time.Now().Add(-time.Hour).Truncate(time.Second)
	p := writeSource(t, src, "grows.csv", content("v1", 1000), mt)
	ctx := fetchCtx(t)
	ls, err := c.List(ctx, src, false)
	if err != nil {
		t.Fatal(err)
	}
	l := listed(t, ls, "grows.csv")

	// Grown since the listing, same mtime (an appender that kept it): the
	// size says so.
	writeSource(t, src, "grows.csv", content("v1", 2000), mt)
	local := filepath.Join(spool, "grows.csv")
	res := c.Download(ctx, []Fetch{{RemoteDir: src, Listed: l, Local: local}})
	wantClass(t, res[0].Err, ClassSourceChanged, p)
	wantAbsent(t, local)
	if left, _ := filepath.Glob(filepath.Join(spool, ".dropship-*")); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}

	// Relisted, it is fetched.
	ls, err = c.List(ctx, src, false)
	if err != nil {
		t.Fatal(err)
	}
	res = c.Download(ctx, []Fetch{{RemoteDir: src, Listed: listed(t, ls, "grows.csv"), Local: local}})
	if res[0].Err != nil || res[0].Bytes != 2000 {
		t.Fatalf("relisted: %d bytes, %v; want 2000", res[0].Bytes, res[0].Err)
	}
}

// After every destination has it, the source file is deleted, or moved into
// move_dir; but only the version that was fetched: one replaced since is
// left for the next listing, and a file of its name in move_dir is not
// overwritten.
func TestSourceDeletedOrMovedOnlyAsFetched(t *testing.T) {
	t.Parallel()
	_, tg := startSSHD(t, sshdtest.Options{})
	c := newClient(t, tg, Options{})
	src, done := t.TempDir(), t.TempDir()
	mt := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, n := range []string{"del.csv", "replaced.csv", "sub/move.csv", "clash.csv"} {
		writeSource(t, src, n, content(n, 50), mt)
	}
	writeSource(t, done, "clash.csv", []byte("already there"), mt)
	ctx := fetchCtx(t)
	ls, err := c.List(ctx, src, true)
	if err != nil {
		t.Fatal(err)
	}

	if err := c.RemoveSource(ctx, src, listed(t, ls, "del.csv")); err != nil {
		t.Fatal(err)
	}
	wantAbsent(t, filepath.Join(src, "del.csv"))
	if err := c.RemoveSource(ctx, src, listed(t, ls, "del.csv")); err != nil {
		t.Errorf("removing it again: %v, want nothing (it is gone)", err)
	}

	writeSource(t, src, "replaced.csv", content("new version", 60), mt.Add(time.Minute))
	err = c.RemoveSource(ctx, src, listed(t, ls, "replaced.csv"))
	wantClass(t, err, ClassSourceChanged)
	if got, _ := os.ReadFile(filepath.Join(src, "replaced.csv")); !bytes.Equal(got, content("new version", 60)) {
		t.Error("the new version was deleted")
	}

	if err := c.MoveSource(ctx, src, listed(t, ls, "sub/move.csv"), done); err != nil {
		t.Fatal(err)
	}
	wantAbsent(t, filepath.Join(src, "sub/move.csv"))
	if got, _ := os.ReadFile(filepath.Join(done, "sub/move.csv")); !bytes.Equal(got, content("sub/move.csv", 50)) {
		t.Error("the moved file is not in move_dir")
	}

	err = c.MoveSource(ctx, src, listed(t, ls, "clash.csv"), done)
	wantClass(t, err, ClassRemoteExists)
	if got, _ := os.ReadFile(filepath.Join(done, "clash.csv")); string(got) != "already there" {
		t.Error("the file in move_dir was overwritten")
	}
	if _, err := os.Stat(filepath.Join(src, "clash.csv")); err != nil {
		t.Errorf("the source of a refused move is gone: %v", err)
	}
}

// Names from the server are the partner's: one that would leave the spool
// or the source folder is refused alone, and a source on a server without
// SFTP is refused with the reason.
func TestFetchRefusesUnsafeNamesAndScp(t *testing.T) {
	t.Parallel()
	_, tg := startSSHD(t, sshdtest.Options{})
	c := newClient(t, tg, Options{})
	src, spool := t.TempDir(), t.TempDir()
	ctx := fetchCtx(t)
	for _, rel := range []string{"../etc/passwd", "/etc/passwd", "a/../../b", ""} {
		res := c.Download(ctx, []Fetch{{RemoteDir: src, Listed: Listed{Rel: rel, Size: 1}, Local: filepath.Join(spool, "x")}})
		wantClass(t, res[0].Err, ClassBadName)
	}
	wantAbsent(t, filepath.Join(spool, "x"))

	_, nosftp := startSSHD(t, sshdtest.Options{NoSFTP: true})
	sc := newClient(t, nosftp, Options{Protocol: ProtocolSCP})
	_, err := sc.List(ctx, src, false)
	wantClass(t, err, ClassRemoteConfig, "SFTP")
}

// A session that drops in the middle of a fetch fails it as a lost
// connection, and leaves nothing in the spool; the next try fetches it.
func TestFetchInterruptedLeavesNothing(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	home := t.TempDir()
	srv, tg := startSFTPD(t, acct, sftpd.Config{Home: home})
	tg.Identity = key
	c := newClient(t, tg, Options{})
	spool := t.TempDir()
	data := content("dropped", 8<<20)
	writeSource(t, home, "in/big.bin", data, time.Now().Add(-time.Hour))
	ctx := fetchCtx(t)
	ls, err := c.List(ctx, "in", false)
	if err != nil {
		t.Fatal(err)
	}
	it := Fetch{RemoteDir: "in", Listed: listed(t, ls, "big.bin"), Local: filepath.Join(spool, "big.bin")}
	srv.SetFaults(sftpd.Faults{DisconnectAfterRead: 1 << 20})
	res := c.Download(ctx, []Fetch{it})
	wantClass(t, res[0].Err, ClassLostConnection)
	wantAbsent(t, it.Local)
	if left, _ := filepath.Glob(filepath.Join(spool, ".dropship-*")); len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
	srv.SetFaults(sftpd.Faults{})
	res = c.Download(ctx, []Fetch{it})
	if got, _ := os.ReadFile(it.Local); res[0].Err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the next try: %v, %d bytes of %d", res[0].Err, len(got), len(data))
	}
}
