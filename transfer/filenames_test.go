package transfer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dropship/dropship/internal/sshdtest"
)

// Hostile file names against a real sshd with internal-sftp (issue 3 point
// 7): every byte a Linux file name may hold (all but NUL and "/"), line
// breaks included, arrives byte-exact under exactly its name with
// byte-identical content, nothing is executed, and a path that is not a
// clean relative path (it would leave remote_dir, or no server can hold it)
// is refused without being sent, alone.

// hostileNames returns the names to send; payloads would create the files
// named by canaries (relative to whatever folder a shell ran them in).
func hostileNames(tag string) (names, canaries []string) {
	c := func(i int) string {
		n := fmt.Sprintf("dscanary-%s-%d", tag, i)
		canaries = append(canaries, n)
		return n
	}
	names = []string{
		"with space.txt",
		"  leading and trailing spaces  ",
		`quote'single.txt`,
		`quote"double.txt`,
		`both'"quotes.txt`,
		"cmd$(touch " + c(1) + ").txt",
		"back`touch " + c(2) + "`.txt",
		"semi;touch " + c(3) + ";.txt",
		"pipe|touch " + c(4),
		"amp&touch " + c(5) + "&.txt",
		"x.txt' ; touch " + c(6) + " ; '",
		"$HOME.txt",
		"glob*.txt",
		"q?.txt",
		"br[a].txt",
		"all*?[.txt",
		`back\slash.txt`,
		`\\double\\`,
		"trailing\\",
		"-dash.txt",
		"--double-dash",
		"c:olon.txt",
		"host:path",
		"ünïcødé-日本.txt",
		"#hash ~tilde {brace} !bang %pct",
		"tab\there.txt",
		"new\nline.txt",
		"carriage\rreturn.txt",
		"crlf\r\n",
		"\n",
		"\nleading newline",
		"x.txt\n; touch " + c(8) + "\n",
		"ctl\x01\x1b[31mred\x7f.txt",
		"latin1-\xe9t\xe9.txt",            // not UTF-8
		strings.Repeat("n", 251) + ".txt", // 255 bytes
		strings.Repeat("日", 85),           // 255 bytes of UTF-8
		strings.Repeat("x", 200) + " $(touch " + c(7) + ")", // long and hostile
	}
	return names, canaries
}

// decoys are local files the unescaped glob names would match.
var decoys = []string{"globX.txt", "qZ.txt", "bra.txt", "allX.txt", "backslash.txt"}

func TestHostileFileNamesRealSSHD(t *testing.T) {
	t.Parallel()
	// internal-sftp starts in a folder of the test's own (relative remote
	// paths land there), not in the account's home.
	start := t.TempDir()
	srv, tg := startSSHD(t, sshdtest.Options{NoSFTP: true, ExtraConfig: []string{"Subsystem sftp internal-sftp -d " + start}})
	_ = srv
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprint(os.Getpid())
	names, canaries := hostileNames(tag)

	local := t.TempDir()
	for _, d := range decoys {
		if err := os.WriteFile(filepath.Join(local, d), []byte("decoy "+d), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	item := func(i int, name, remoteDir string) Item {
		p := filepath.Join(local, name)
		data := content(name, 100+i)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return Item{ID: fmt.Sprintf("n%02d", i), File: f, Local: p, RemoteDir: remoteDir, Rel: name, Size: int64(len(data))}
	}
	// wantExactly fails unless dir holds exactly the items' names.
	wantExactly := func(t *testing.T, dir string, items []Item) {
		t.Helper()
		want := map[string]bool{}
		for _, it := range items {
			want[it.Rel] = true
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !want[e.Name()] {
				t.Errorf("unexpected remote file %q", e.Name())
			}
			delete(want, e.Name())
		}
		for n := range want {
			t.Errorf("missing remote file %q", n)
		}
	}
	c := newClient(t, tg, Options{Atomic: true, ControlDir: controlDir(t)})

	t.Run("one batch", func(t *testing.T) {
		remote := t.TempDir()
		var items []Item
		for i, n := range names {
			items = append(items, item(i, n, remote))
		}
		rec := &recorder{}
		res := upload(t, c, items, rec.observer())
		wantDelivered(t, items, res)
		wantExactly(t, remote, items)
		if t.Failed() {
			t.Logf("output:\n%s", rec.text())
		}
	})

	t.Run("one per batch", func(t *testing.T) {
		remote := t.TempDir()
		var wg sync.WaitGroup
		items := make([]Item, len(names))
		results := make([]Result, len(names))
		for i, n := range names {
			items[i] = item(i, n, remote)
		}
		for i := range items {
			wg.Go(func() { results[i] = upload(t, c, items[i:i+1], Observer{})[0] })
		}
		wg.Wait()
		wantDelivered(t, items, results)
		wantExactly(t, remote, items)
	})

	t.Run("relative remote folder", func(t *testing.T) {
		// "in:box" relative to internal-sftp's start folder: sftp sees
		// "./in:box/…", so no part before a "/" can be taken for a host.
		dir := filepath.Join(start, "in:box")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var items []Item
		for i, n := range names {
			items = append(items, item(i, n, "in:box"))
		}
		res := upload(t, c, items, Observer{})
		for i := range items {
			if res[i].Err != nil {
				t.Errorf("%q: %v", items[i].Rel, res[i].Err)
			}
		}
		for i := range items {
			items[i].RemoteDir = dir
		}
		wantDelivered(t, items, res)
		wantExactly(t, dir, items)
	})

	t.Run("line breaks in folder names", func(t *testing.T) {
		remote := t.TempDir()
		items := []Item{
			item(0, "x.txt", remote),
			item(1, "y\n.txt", remote),
		}
		items[0].Rel = "sub/dir\nname/x\r\n.txt"
		items[1].Rel = "\n/\r/y\n.txt"
		res := upload(t, c, items, Observer{})
		wantDelivered(t, items, res)
		wantNoTempFiles(t, remote)
	})

	t.Run("paths that are not clean relative paths are refused alone", func(t *testing.T) {
		parent := t.TempDir()
		remote := filepath.Join(parent, "in")
		if err := os.Mkdir(remote, 0o755); err != nil {
			t.Fatal(err)
		}
		abs := filepath.Join(parent, "abs-"+tag+".txt")
		refused := []string{
			"../escape-" + tag + ".txt",
			"sub/../../escape2-" + tag + ".txt",
			abs,
			"./dot.txt",
			"a//b.txt",
			"trailing/",
			"",
			".",
			"..",
			"nul\x00byte.txt",
			strings.Repeat("l", 256), // one byte more than a name may hold
		}
		items := []Item{item(0, "before.txt", remote)}
		for i, rel := range refused {
			it := item(i+1, fmt.Sprintf("refused%d.txt", i), remote)
			it.Rel = rel
			items = append(items, it)
		}
		items = append(items, item(len(items), "after.txt", remote))
		res := upload(t, c, items, Observer{})
		last := len(items) - 1
		for i := 1; i < last; i++ {
			wantClass(t, res[i].Err, ClassBadName, strconv.Quote(items[i].Rel))
			if res[i].Began {
				t.Errorf("%q: Began", items[i].Rel)
			}
		}
		wantDelivered(t, []Item{items[0], items[last]}, []Result{res[0], res[last]})
		wantExactly(t, remote, []Item{items[0], items[last]})
		// Nothing landed outside remote_dir either.
		entries, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "in" {
				t.Errorf("%q appeared next to remote_dir", e.Name())
			}
		}
		wantAbsent(t, abs)
	})

	// Nothing was executed anywhere a shell could have run the payloads.
	for _, dir := range []string{home, start, cwd, "/", os.TempDir(), local, srv.Dir} {
		for _, cn := range canaries {
			wantAbsent(t, filepath.Join(dir, cn))
		}
	}
}
