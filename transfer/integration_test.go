package transfer

import (
	"testing"

	"github.com/dropship/dropship/internal/sshdtest"
)

// Key auth against a real sshd: a batch with files at the top and in new
// subfolders arrives byte-identical, and no temporary name is left.
func TestUploadKeyAuthRealSSHD(t *testing.T) {
	t.Parallel()
	_, tg := startSSHD(t, sshdtest.Options{})
	remote := t.TempDir()
	items := []Item{
		localItem(t, "a1", "a.txt", content("a", 1000), remote, "a.txt"),
		localItem(t, "b2", "b.bin", content("b", 300<<10), remote, "b.bin"),
		localItem(t, "c3", "c.txt", content("c", 0), remote, "sub/c.txt"),
		localItem(t, "d4", "d.txt", content("d", 4096), remote, "sub/deeper/d.txt"),
	}
	rec := &recorder{}
	c := newClient(t, tg, Options{Atomic: true})
	res := upload(t, c, items, rec.observer())
	wantDelivered(t, items, res)
	wantNoTempFiles(t, remote)
	if t.Failed() {
		t.Logf("output:\n%s", rec.text())
	}
}
