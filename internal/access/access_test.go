package access

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestCheckAsAnotherUser: root checks as nobody, who may read a 0755
// folder of root's but not write it, nor enter a 0700 one; root itself may.
func TestCheckAsAnotherUser(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root on Linux")
	}
	nobody, err := Lookup(65534)
	if err != nil {
		t.Skipf("no user 65534: %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir's folders are 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	open, closed := filepath.Join(dir, "open"), filepath.Join(dir, "closed")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(filepath.Dir(dir)); d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			t.Skipf("%s does not let other users through", d)
		}
	}
	reqs := []Request{{open, Read | Exec}, {open, Write | Exec}, {closed, Read | Exec}}
	got, err := Check(nobody, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != nil || !errors.Is(got[1], fs.ErrPermission) || !errors.Is(got[2], fs.ErrPermission) {
		t.Errorf("as nobody: %v", got)
	}
	got, err = Check(Current(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		if e != nil {
			t.Errorf("as root, %+v: %v", reqs[i], e)
		}
	}
	// This thread, and the process, are still root.
	if os.Geteuid() != 0 {
		t.Fatal("the process lost root")
	}
	if err := os.WriteFile(filepath.Join(closed, "x"), nil, 0o600); err != nil {
		t.Errorf("root can no longer write: %v", err)
	}
}
