package agent

import (
	"testing"
	"time"
)

// Delays double per attempt from retry_backoff, stay within ±20% jitter, and
// never exceed retry_backoff_max by more than the jitter.
func TestBackoff(t *testing.T) {
	base, ceiling := 5*time.Second, 5*time.Minute
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for n, w := range want {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := backoff(base, ceiling, n+1)
			if d < w*8/10 || d > w*12/10 {
				t.Fatalf("attempt %d: delay %s outside %s ±20%%", n+1, d, w)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("attempt %d: no jitter", n+1)
		}
	}
}
