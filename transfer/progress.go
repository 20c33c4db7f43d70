package transfer

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Progress is one frame of OpenSSH's progress meter, parsed. The meter is
// cosmetic (sizes are rounded, 100% does not mean success), so it feeds
// progress events and the stall watchdog, never the verdict on a transfer.
type Progress struct {
	Percent        int
	Bytes          int64         // bytes sent so far, as the meter shows them (rounded to its unit)
	BytesPerSecond float64       // the meter's moving rate
	ETA            time.Duration // time left; 0 when unknown, stalled or final
	Stalled        bool          // the meter says "- stalled -" (no progress for 5 s)
	Final          bool          // the last frame of a file: the ETA field shows the elapsed time
}

// progressRE matches one frame (OPENSSH.md §5). It is anchored at the end so
// that file names containing spaces, digits or "%" do not confuse it.
var progressRE = regexp.MustCompile(`^(.*?) *(\d{1,3})% +(\d+)( |[KMGT]B) +(\d+\.\d)([KMGT]B)/s +((?:\d+:)?\d\d:\d\d(?: ETA)?|--:-- ETA|- stalled -) *$`)

// parseProgress parses a progress frame; ok is false for anything else.
func parseProgress(frame string) (p Progress, ok bool) {
	if !strings.Contains(frame, "%") {
		return p, false
	}
	m := progressRE.FindStringSubmatch(frame)
	if m == nil {
		return p, false
	}
	pct, err := strconv.Atoi(m[2])
	if err != nil || pct > 100 {
		return p, false
	}
	n, err := strconv.ParseInt(m[3], 10, 64)
	if err != nil {
		return p, false
	}
	rate, err := strconv.ParseFloat(m[5], 64)
	if err != nil {
		return p, false
	}
	p.Percent = pct
	p.Bytes = n * unitBytes(strings.TrimSpace(m[4]))
	p.BytesPerSecond = rate * float64(unitBytes(m[6]))
	switch eta := m[7]; {
	case eta == "- stalled -":
		p.Stalled = true
	case eta == "--:-- ETA":
	case strings.HasSuffix(eta, " ETA"):
		p.ETA = parseClock(strings.TrimSuffix(eta, " ETA"))
	default:
		p.Final = true
	}
	return p, true
}

// unitBytes is the multiplier of the meter's 1024-based units.
func unitBytes(unit string) int64 {
	switch unit {
	case "KB":
		return 1 << 10
	case "MB":
		return 1 << 20
	case "GB":
		return 1 << 30
	case "TB":
		return 1 << 40
	}
	return 1
}

// parseClock parses "MM:SS" or "H:MM:SS".
func parseClock(s string) time.Duration {
	var d time.Duration
	for _, part := range strings.Split(s, ":") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return 0
		}
		d = d*60 + time.Duration(n)
	}
	return d * time.Second
}
