package transfer

import (
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
)

// bandwidth caps a target's rate over all its sessions: 1.25 MiB at
// 512 KiB/s (a burst of one chunk) cannot take less than two seconds, however
// fast the link.
func TestBandwidthCapsTheRate(t *testing.T) {
	t.Parallel()
	acct, key := keyAccount(t)
	_, tg := startSFTPD(t, acct, sftpd.Config{})
	tg.Identity = key
	tg.Connections = 2
	const rate = 512 << 10
	c := newClient(t, tg, Options{Atomic: true, Overwrite: true, ControlDir: controlDir(t), Bandwidth: rate})
	remote := t.TempDir()
	var items []Item
	var total int64
	for i, n := range []int{640 << 10, 384 << 10, 256 << 10} {
		it := localItem(t, "bw"+string(rune('a'+i)), "f"+string(rune('a'+i)), content("bw"+string(rune('a'+i)), n), remote, "f"+string(rune('a'+i)))
		items = append(items, it)
		total += int64(n)
	}
	// Log in first: the limit is on data, not on the login.
	if err := c.Check(t.Context(), remote); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := upload(t, c, items, Observer{})
	took := time.Since(start)
	wantDelivered(t, items, res)
	min := time.Duration(float64(total-chunkSize) / rate * float64(time.Second))
	if took < min {
		t.Errorf("%d bytes at bandwidth %d B/s took %s, less than the %s the limit allows", total, rate, took, min)
	}
}
