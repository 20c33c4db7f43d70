package main

import (
	"strings"
	"testing"

	"github.com/dropship/dropship/events"
)

// TestFormatPostFailed: a delivered file left in place shows as such, with
// what failed, why and when it is tried again.
func TestFormatPostFailed(t *testing.T) {
	ev := goldenEvent(t, events.TypeTransferPostFailed)
	d, err := ev.Transfer()
	if err != nil {
		t.Fatal(err)
	}
	got := formatEvent(ev, goldenStyle)
	want := "09:27:20 post-failed  acme  /srv/drop/acme/invoices/2025-03/INV-10442.pdf -> /incoming/invoices/2025-03/INV-10442.pdf  delivered, left in place: archive: " + d.Error.Message + "; tried again at 09:27:25"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if !strings.Contains(got, "permission denied") {
		t.Errorf("the reason is missing: %q", got)
	}
}
