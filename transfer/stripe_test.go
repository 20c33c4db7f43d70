package transfer

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/dropship/dropship/internal/sftpd"
)

// A big file is written over several SFTP sessions of the one connection at
// once (issue 11 point 2), and arrives whole, with the sha256 of its bytes:
// one read, one hash, whatever the number of channels.
func TestBigFileIsStriped(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	srv, tg := startSFTPD(t, acct, sftpd.Config{})
	tg.Identity = key
	tg.Connections = 1
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t)})
	data := content("striped", stripeMin+3*chunkSize+123)
	items := []Item{localItem(t, "big", "big.bin", data, t.TempDir(), "big.bin")}
	res := upload(t, c, items, Observer{})
	wantDelivered(t, items, res)
	sum := sha256.Sum256(data)
	if res[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("sha256 %s, want %x", res[0].SHA256, sum)
	}
	st := srv.Stats()
	if st.Sessions < stripeWidth {
		t.Errorf("%d SFTP sessions for a %d-byte file, want %d (striped)", st.Sessions, len(data), stripeWidth)
	}
	if st.Logins != 1 {
		t.Errorf("%d logins, want 1", st.Logins)
	}
	wantNoTempFiles(t, items[0].RemoteDir)
}
