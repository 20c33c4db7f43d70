package transfer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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
	c.stripeRTT = 0 // loopback is nearer than striping pays for
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

// On loopback a big file goes over one session: one channel's window is no
// limit that near, and more sessions would only cost CPU. (The connection is
// warmed first, as an agent's is: the round trip is the fastest answer of
// many requests, and on a loaded machine a few may all be slow.)
func TestBigFileNearbyIsNotStriped(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	srv, tg := startSFTPD(t, acct, sftpd.Config{})
	tg.Identity = key
	tg.Connections = 1
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t)})
	remote := t.TempDir()
	var warm []Item
	for i := range 50 {
		name := fmt.Sprintf("warm%02d", i)
		warm = append(warm, localItem(t, name, name, content(name, 100), remote, name))
	}
	wantDelivered(t, warm, upload(t, c, warm, Observer{}))

	data := content("nearby", stripeMin+chunkSize)
	items := []Item{localItem(t, "big", "big.bin", data, remote, "big.bin")}
	wantDelivered(t, items, upload(t, c, items, Observer{}))
	if st := srv.Stats(); st.Sessions != 1 {
		t.Errorf("%d SFTP sessions for a %d-byte file on loopback, want 1", st.Sessions, len(data))
	}
}
