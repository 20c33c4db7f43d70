package agent

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
)

// recFor is the record readiness would have made of the file at rel below
// root, as it is now.
func recFor(t *testing.T, root, rel string) *journal.Record {
	t.Helper()
	p := filepath.Join(root, rel)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return &journal.Record{Path: p, Rel: filepath.ToSlash(rel), Size: fi.Size(), ModTime: fi.ModTime(), Dev: uint64(st.Dev), Inode: st.Ino}
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Every swap an attacker can make between readiness and the open is refused
// with the class the agent reports, and nothing outside the root is read.
func TestOpenCheckedRefusesSwaps(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "shadow")
	write(t, outside, "root:secret-hash:19000")
	cases := []struct {
		name   string
		follow bool
		swap   func(t *testing.T, root, p string) // after the record was made
		class  transfer.Class                     // "" = opens; "gone" = ErrNotExist
	}{
		{"unchanged", false, func(*testing.T, string, string) {}, ""},
		{"symlink to a secret", false, func(t *testing.T, root, p string) {
			os.Remove(p)
			if err := os.Symlink(outside, p); err != nil {
				t.Fatal(err)
			}
		}, transfer.ClassUnsafePath},
		{"symlink to a secret, follow_symlinks", true, func(t *testing.T, root, p string) {
			os.Remove(p)
			if err := os.Symlink(outside, p); err != nil {
				t.Fatal(err)
			}
		}, transfer.ClassUnsafePath},
		{"folder on the path swapped for a symlink", false, func(t *testing.T, root, p string) {
			dir := filepath.Dir(p)
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Dir(outside), dir); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(filepath.Dir(outside), filepath.Base(p)), "outside")
		}, transfer.ClassUnsafePath},
		{"hard link to a secret", false, func(t *testing.T, root, p string) {
			os.Remove(p)
			if err := os.Link(outside, p); err != nil {
				t.Skipf("cannot hard link here: %v", err)
			}
		}, transfer.ClassUnsafePath},
		{"folder", false, func(t *testing.T, root, p string) {
			os.Remove(p)
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}, transfer.ClassUnsafePath},
		{"fifo", false, func(t *testing.T, root, p string) {
			os.Remove(p)
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}, transfer.ClassUnsafePath},
		{"another file renamed over it", false, func(t *testing.T, root, p string) {
			other := filepath.Join(root, "other")
			write(t, other, "another version, longer")
			if err := os.Rename(other, p); err != nil {
				t.Fatal(err)
			}
		}, transfer.ClassLocalChanged},
		{"rewritten in place", false, func(t *testing.T, root, p string) {
			if err := os.WriteFile(p, []byte("rewritten!"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, transfer.ClassLocalChanged},
		{"removed", false, func(t *testing.T, root, p string) { os.Remove(p) }, "gone"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, "sub", "f.txt")
			write(t, p, "original")
			rec := recFor(t, root, filepath.Join("sub", "f.txt"))
			c.swap(t, root, p)
			f, err := openChecked(root, c.follow, rec)
			switch c.class {
			case "":
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				b, _ := io.ReadAll(f)
				f.Close()
				if string(b) != "original" {
					t.Errorf("read %q", b)
				}
				return
			case "gone":
				if !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("err %v, want not exist", err)
				}
				return
			}
			if f != nil {
				b, _ := io.ReadAll(f)
				f.Close()
				t.Fatalf("opened, read %q", b)
			}
			if got := transfer.ClassOf(err); got != c.class {
				t.Errorf("class %s (%v), want %s", got, err, c.class)
			}
		})
	}
}

// With follow_symlinks, a link that stays inside the root is sent (its
// target's identity is what readiness recorded); a link out is not.
func TestOpenCheckedFollowsLinksInside(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "real.txt"), "inside")
	if err := os.Symlink("real.txt", filepath.Join(root, "link.txt")); err != nil {
		t.Fatal(err)
	}
	rec := recFor(t, root, "link.txt") // Stat follows: the target's identity
	f, err := openChecked(root, true, rec)
	if err != nil {
		t.Fatalf("follow_symlinks: %v", err)
	}
	f.Close()
	if _, err := openChecked(root, false, rec); transfer.ClassOf(err) != transfer.ClassUnsafePath {
		t.Errorf("without follow_symlinks: %v, want unsafe-path", err)
	}
}
