package main

import (
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dropship/dropship/events"
)

// This file holds what `dropship events` prints, as pure functions of their
// arguments: one line per event, and the frame that redraws the progress bars
// below the lines on a terminal.

// lineStyle is how event lines are written.
type lineStyle struct {
	home  string         // the agent whose name is left out (the config's or -agent)
	now   time.Time      // the time is printed without its date on now's day
	loc   *time.Location // time zone of printed times
	color bool           // ANSI colors on the state word
}

// ANSI SGR sequences, used only on a terminal and never with NO_COLOR.
const (
	sgrReset  = "\x1b[0m"
	sgrRed    = "\x1b[31m"
	sgrGreen  = "\x1b[32m"
	sgrYellow = "\x1b[33m"
	sgrDim    = "\x1b[2m"
)

// stateWidth is the width of the state column: the longest state, "completed".
const stateWidth = 9

// formatEvent returns the line printed for ev, without a line ending. Every
// value that comes from the network is cleaned of control characters, so a
// line never holds an escape sequence unless st.color asks for one.
func formatEvent(ev events.Event, st lineStyle) string {
	var b strings.Builder
	b.WriteString(st.clock(ev.Time))
	b.WriteByte(' ')
	if state, ok := ev.TransferState(); ok {
		d, err := ev.Transfer()
		if err != nil {
			return st.unreadable(&b, ev, err)
		}
		st.state(&b, string(state), stateColor(state))
		b.WriteString(st.where(d.Agent, d.Target.Name))
		fmt.Fprintf(&b, "  %s -> %s", clean(d.LocalPath), clean(d.RemotePath))
		switch state {
		case events.TransferQueued:
			fmt.Fprintf(&b, "  %s", humanBytes(d.SizeBytes))
			if d.Reason != "" {
				fmt.Fprintf(&b, " (%s)", clean(d.Reason))
			}
		case events.TransferStarted:
			fmt.Fprintf(&b, "  attempt %d, %s", d.Attempt, humanBytes(d.SizeBytes))
		case events.TransferCompleted:
			fmt.Fprintf(&b, "  %s in %s", humanBytes(d.SizeBytes), humanSeconds(d.DurationSeconds))
			if d.BytesPerSecond > 0 {
				fmt.Fprintf(&b, " (%s/s)", humanBytes(int64(d.BytesPerSecond)))
			}
			if d.Attempt > 1 {
				fmt.Fprintf(&b, ", attempt %d", d.Attempt)
			}
		case events.TransferRetrying, events.TransferFailed:
			fmt.Fprintf(&b, "  attempt %d: %s", d.Attempt, errorText(d.Error))
			if d.NextAttemptAt != nil {
				fmt.Fprintf(&b, "; next attempt at %s", st.clock(*d.NextAttemptAt))
			}
		case events.TransferPostFailed:
			fmt.Fprintf(&b, "  delivered, left in place: %s", errorText(d.Error))
			if d.NextAttemptAt != nil {
				fmt.Fprintf(&b, "; tried again at %s", st.clock(*d.NextAttemptAt))
			}
		}
		return b.String()
	}
	if state, ok := ev.AgentState(); ok {
		d, err := ev.Agent()
		if err != nil {
			return st.unreadable(&b, ev, err)
		}
		color := ""
		if state == events.AgentError {
			color = sgrRed
		}
		st.state(&b, "agent", color)
		fmt.Fprintf(&b, "%s %s: %s", clean(d.Agent), state, clean(d.Message))
		if d.Error != "" {
			fmt.Fprintf(&b, ": %s", clean(d.Error))
		}
		if d.Version != "" {
			fmt.Fprintf(&b, " (dropship %s, pid %d on %s)", clean(d.Version), d.PID, clean(d.Hostname))
		}
		return b.String()
	}
	if state, ok := ev.FetchState(); ok {
		d, err := ev.Fetch()
		if err != nil {
			return st.unreadable(&b, ev, err)
		}
		color := ""
		switch state {
		case events.FetchFetched, events.FetchSourceDeleted:
			color = sgrGreen
		case events.FetchFailed:
			color = sgrRed
		}
		st.state(&b, "fetch."+string(state), color)
		b.WriteString(st.where(d.Agent, d.Source.Name))
		switch state {
		case events.FetchListed:
			fmt.Fprintf(&b, "  %s: %d file(s) to fetch", clean(d.RemotePath), d.Files)
		case events.FetchFetched:
			fmt.Fprintf(&b, "  %s -> %s  %s", clean(d.RemotePath), clean(d.LocalPath), humanBytes(d.SizeBytes))
		case events.FetchFailed:
			fmt.Fprintf(&b, "  %s: %s", clean(d.RemotePath), errorText(d.Error))
		case events.FetchSourceDeleted:
			if d.MovedTo != "" {
				fmt.Fprintf(&b, "  %s moved to %s on the source", clean(d.RemotePath), clean(d.MovedTo))
			} else {
				fmt.Fprintf(&b, "  %s deleted on the source", clean(d.RemotePath))
			}
		}
		return b.String()
	}
	switch ev.Type {
	case events.TypeProgress:
		d, err := ev.Progress()
		if err != nil {
			return st.unreadable(&b, ev, err)
		}
		st.state(&b, "progress", sgrDim)
		b.WriteString(st.where(d.Agent, d.Target.Name))
		fmt.Fprintf(&b, "  %s  %d%%  %s / %s", clean(d.LocalPath), percent(d.BytesSent, d.SizeBytes, d.Percent),
			humanBytes(d.BytesSent), humanBytes(d.SizeBytes))
		if d.BytesPerSecond > 0 {
			fmt.Fprintf(&b, "  %s/s", humanBytes(int64(d.BytesPerSecond)))
		}
		if d.Stalled {
			b.WriteString("  stalled")
		} else if d.ETASeconds > 0 {
			fmt.Fprintf(&b, "  ETA %s", humanETA(d.ETASeconds))
		}
		return b.String()
	case events.TypeLog:
		d, err := ev.Log()
		if err != nil {
			return st.unreadable(&b, ev, err)
		}
		st.state(&b, "log", sgrDim)
		fmt.Fprintf(&b, "%s  %s", st.where(d.Agent, d.Target.Name), clean(d.Line))
		return b.String()
	}
	// A type this version does not know: show what can be shown.
	st.state(&b, "event", "")
	fmt.Fprintf(&b, "%s %s %s", clean(ev.Type), clean(ev.NATSSubject), clean(ev.Subject))
	return strings.TrimRight(b.String(), " ")
}

func (st lineStyle) unreadable(b *strings.Builder, ev events.Event, err error) string {
	st.state(b, "event", sgrRed)
	fmt.Fprintf(b, "%s %s: unreadable data: %s", clean(ev.Type), clean(ev.ID), clean(err.Error()))
	return b.String()
}

// noticeLine is a line of dropship's own, such as a warning about dropped
// events, in the same columns as event lines.
func noticeLine(st lineStyle, t time.Time, kind, msg string) string {
	var b strings.Builder
	b.WriteString(st.clock(t))
	b.WriteByte(' ')
	st.state(&b, kind, sgrYellow)
	b.WriteString(clean(msg))
	return b.String()
}

func (st lineStyle) state(b *strings.Builder, word, color string) {
	if st.color && color != "" {
		b.WriteString(color + word + sgrReset)
	} else {
		b.WriteString(word)
	}
	b.WriteString(strings.Repeat(" ", max(2, stateWidth+2-len(word))))
}

func stateColor(s events.TransferState) string {
	switch s {
	case events.TransferCompleted:
		return sgrGreen
	case events.TransferRetrying:
		return sgrYellow
	case events.TransferFailed, events.TransferPostFailed:
		return sgrRed
	}
	return ""
}

// clock formats t as a time of day, with the date when t is not on st.now's
// day (events replayed with -since may be older).
func (st lineStyle) clock(t time.Time) string {
	loc := st.loc
	if loc == nil {
		loc = time.Local
	}
	t, now := t.In(loc), st.now.In(loc)
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format(time.TimeOnly)
	}
	return t.Format(time.DateTime)
}

// where names a target, with its agent when that is not the home agent.
func (st lineStyle) where(agent, target string) string {
	if agent == "" || agent == st.home {
		return clean(target)
	}
	return clean(target) + "@" + clean(agent)
}

func errorText(e *events.ErrorInfo) string {
	if e == nil {
		return "no error information"
	}
	return clean(e.Class) + ": " + clean(e.Message)
}

// clean makes s safe to print on a terminal: control characters (escape
// sequences, carriage returns, newlines) and invalid UTF-8 are shown as Go
// escapes such as \x1b instead of being interpreted.
func clean(s string) string {
	ok := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				fmt.Fprintf(&b, `\x%02x`, s[i])
			} else {
				b.WriteRune(r)
			}
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// humanBytes formats n in IEC units with one decimal: "512 B", "46.0 MiB".
// It is at most 9 columns wide for any size below 1000 PiB.
func humanBytes(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", max(n, 0))
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n)/1024, 0
	for v >= 999.95 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

func humanSeconds(s float64) string {
	if s < 59.95 {
		return strconv.FormatFloat(math.Round(s*10)/10, 'f', -1, 64) + "s"
	}
	return (time.Duration(s) * time.Second).Round(time.Second).String()
}

// humanETA formats a number of seconds left: "7s", "3m05s", "2h04m".
func humanETA(s int) string {
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", max(s, 0))
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	default:
		return fmt.Sprintf("%dh%02dm", s/3600, s/60%60)
	}
}

func percent(sent, size int64, reported int) int {
	if size > 0 {
		return int(min(100, max(0, sent*100/size)))
	}
	return min(100, max(0, reported))
}

// bar is a running transfer as its progress bar shows it.
type bar struct {
	id      string // transfer id
	attempt int
	file    string // local path
	target  string // target, with @agent when not the home agent
	sent    int64
	size    int64
	rate    float64 // bytes per second
	eta     int     // seconds; 0 when unknown
	stalled bool    // the agent said so
	updated time.Time
}

// staleAfter is how long a bar may go without news before it says so
// instead of showing an ETA that is no longer true.
const staleAfter = 10 * time.Second

// Widths of the fixed columns of a bar, so that bars line up.
const (
	pctWidth   = len("100%")
	bytesWidth = 9 + 1 + 9          // "26.2 MiB/46.0 MiB"
	rateWidth  = 9 + 2              // "10.5 MiB/s"
	etaWidth   = len("idle 59m59s") // "ETA 2s", "stalled", "idle 12s"
	barMin     = 10                 // narrowest useful bar, brackets included
	barMax     = 42
	labelMin   = 12 // file name columns a layout must leave, or the whole name if shorter
	sep        = "  "
)

// barLayout says which columns a bar has at a given width; wider terminals
// show more. Columns are dropped in this order as the terminal narrows:
// target, ETA, rate, bytes, the bar itself; the file name is then shortened.
var barLayouts = []struct{ target, eta, rate, bytes, graph bool }{
	{true, true, true, true, true},
	{false, true, true, true, true},
	{false, false, true, true, true},
	{false, false, false, true, true},
	{false, false, false, false, true},
	{false, false, false, false, false},
}

// barLines returns one line per bar, each at most width-1 columns wide (the
// last column is left free so that a full line never wraps). Columns line up
// across bars.
func barLines(width int, now time.Time, bars []*bar) []string {
	limit := max(width-1, 0)
	labels := make([]string, len(bars))
	labelCol, targetCol := 0, 0
	for i, b := range bars {
		labels[i] = clean(path.Base(b.file))
		labelCol = max(labelCol, textWidth(labels[i]))
		targetCol = max(targetCol, textWidth(b.target))
	}
	for _, l := range barLayouts {
		fixed := pctWidth
		cols := 2 // label and percent
		if l.target {
			fixed += targetCol
			cols++
		}
		if l.eta {
			fixed += etaWidth
			cols++
		}
		if l.rate {
			fixed += rateWidth
			cols++
		}
		if l.bytes {
			fixed += bytesWidth
			cols++
		}
		if l.graph {
			cols++
		}
		room := limit - fixed - (cols-1)*len(sep) // for the label and the bar
		labelW, graphW := 0, 0
		if l.graph {
			if room < min(labelCol, labelMin)+barMin {
				continue
			}
			graphW = min(max(room-labelCol, barMin), barMax)
			labelW = min(room-graphW, labelCol)
		} else {
			if room < min(labelCol, labelMin) {
				continue
			}
			labelW = min(room, labelCol)
		}
		out := make([]string, len(bars))
		for i, b := range bars {
			parts := []string{padRight(shorten(labels[i], labelW), labelW)}
			if l.target {
				parts = append(parts, padRight(shorten(clean(b.target), targetCol), targetCol))
			}
			if l.graph {
				parts = append(parts, graph(graphW, b.sent, b.size))
			}
			parts = append(parts, fmt.Sprintf("%3d%%", percent(b.sent, b.size, 0)))
			if l.bytes {
				parts = append(parts, padRight(padLeft(humanBytes(b.sent), 9)+"/"+humanBytes(b.size), bytesWidth))
			}
			if l.rate {
				rate := ""
				if b.rate > 0 {
					rate = humanBytes(int64(b.rate)) + "/s"
				}
				parts = append(parts, padLeft(rate, rateWidth))
			}
			if l.eta {
				parts = append(parts, padRight(b.status(now), etaWidth))
			}
			out[i] = strings.TrimRight(strings.Join(parts, sep), " ")
		}
		return out
	}
	// Too narrow for anything but the name and the percentage.
	out := make([]string, len(bars))
	for i, b := range bars {
		pct := fmt.Sprintf(" %d%%", percent(b.sent, b.size, 0))
		if limit <= len(pct) {
			out[i] = shorten(strings.TrimSpace(pct), limit)
			continue
		}
		out[i] = shorten(labels[i], limit-len(pct)) + pct
	}
	return out
}

// status is the last column of a bar: the ETA, or why there is none.
func (b *bar) status(now time.Time) string {
	if age := now.Sub(b.updated); age >= staleAfter {
		return "idle " + humanETA(int(age.Seconds()))
	}
	if b.stalled {
		return "stalled"
	}
	if b.eta > 0 {
		return "ETA " + humanETA(b.eta)
	}
	if b.rate > 0 && b.size > b.sent {
		return "ETA " + humanETA(int(float64(b.size-b.sent)/b.rate+0.5))
	}
	return ""
}

// graph draws a bar of width columns, brackets included: [=====>    ].
func graph(width int, sent, size int64) string {
	inner := width - 2
	if inner <= 0 {
		return ""
	}
	filled := 0
	if size > 0 {
		filled = int(min(int64(inner), max(0, sent*int64(inner)/size)))
	}
	s := strings.Repeat("=", filled)
	if filled < inner && filled > 0 {
		s = s[:filled-1] + ">"
	}
	return "[" + s + strings.Repeat(" ", inner-filled) + "]"
}

// Terminal control sequences used to redraw the bars.
const (
	csiClearBelow = "\x1b[J"   // erase from the cursor to the end of the screen
	csiUp         = "\x1b[%dA" // move the cursor up n rows
)

// frame returns the bytes that update the screen: it erases the prevRows bar
// rows drawn by the previous frame (the cursor is at the end of the last of
// them), prints lines (which scroll up as usual), then draws bars below them
// and leaves the cursor at the end of the last bar. It also returns how many
// bar rows are now on the screen, for the next frame. At most height-2 bar
// rows are drawn, so that lines keep scrolling; the last row then says how
// many more transfers run. lines must be clean (see [clean]).
func frame(prevRows, width, height int, now time.Time, lines []string, bars []*bar) ([]byte, int) {
	var b strings.Builder
	if prevRows > 0 {
		b.WriteByte('\r')
		if prevRows > 1 {
			fmt.Fprintf(&b, csiUp, prevRows-1)
		}
		b.WriteString(csiClearBelow)
	}
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	rows := min(len(bars), max(height-2, 1))
	shown := bars
	more := ""
	if rows < len(bars) {
		shown = bars[:rows-1]
		more = shorten(fmt.Sprintf("… and %d more transfers", len(bars)-len(shown)), max(width-1, 0))
	}
	drawn := barLines(width, now, shown)
	if more != "" {
		drawn = append(drawn, more)
	}
	b.WriteString(strings.Join(drawn, "\n"))
	return []byte(b.String()), len(drawn)
}

// textWidth is the number of terminal columns s takes.
func textWidth(s string) int {
	n := 0
	for _, r := range s {
		n += runeWidth(r)
	}
	return n
}

// runeWidth is the number of columns r takes on a terminal: 0 for combining
// marks, 2 for East Asian wide characters and emoji, 1 otherwise. It is an
// approximation of Unicode's East Asian Width good enough to keep bars from
// wrapping.
func runeWidth(r rune) int {
	switch {
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf):
		return 0
	case r >= 0x1100 && r <= 0x115F, r >= 0x2E80 && r <= 0xA4CF && r != 0x303F,
		r >= 0xAC00 && r <= 0xD7A3, r >= 0xF900 && r <= 0xFAFF, r >= 0xFE30 && r <= 0xFE4F,
		r >= 0xFF00 && r <= 0xFF60, r >= 0xFFE0 && r <= 0xFFE6,
		r >= 0x1F300 && r <= 0x1F64F, r >= 0x1F900 && r <= 0x1F9FF, r >= 0x20000 && r <= 0x3FFFD:
		return 2
	}
	return 1
}

// shorten cuts s to at most w columns, replacing its middle with "…" so that
// both the start and the end (a file's extension) stay visible.
func shorten(s string, w int) string {
	if textWidth(s) <= w {
		return s
	}
	if w <= 0 {
		return ""
	}
	if w == 1 {
		return "…"
	}
	runes := []rune(s)
	headW := (w - 1) / 2
	tailW := w - 1 - headW
	var head, tail []rune
	for n := 0; len(head) < len(runes); {
		rw := runeWidth(runes[len(head)])
		if n+rw > headW {
			break
		}
		head = append(head, runes[len(head)])
		n += rw
	}
	for n, i := 0, len(runes)-1; i >= len(head); i-- {
		rw := runeWidth(runes[i])
		if n+rw > tailW {
			break
		}
		tail = append([]rune{runes[i]}, tail...)
		n += rw
	}
	return string(head) + "…" + string(tail)
}

func padRight(s string, w int) string {
	return s + strings.Repeat(" ", max(0, w-textWidth(s)))
}

func padLeft(s string, w int) string {
	return strings.Repeat(" ", max(0, w-textWidth(s))) + s
}
