package transfer

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"unicode/utf8"
)

// redacted is what a Secret prints as, wherever it ends up.
const redacted = "[redacted]"

// Secret holds a password or passphrase. It prints, marshals and logs as
// "[redacted]" whatever the verb or encoder, so it cannot leak by accident
// through fmt, encoding/json or log/slog. Only the pty writer reads its value.
type Secret struct {
	b []byte
}

// NewSecret returns a Secret holding a copy of b.
func NewSecret(b []byte) Secret {
	return Secret{b: bytes.Clone(b)}
}

// IsZero reports whether the secret is empty (no password configured).
func (s Secret) IsZero() bool { return len(s.b) == 0 }

// Format implements fmt.Formatter for every verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// String implements fmt.Stringer.
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (s Secret) GoString() string { return redacted }

// MarshalText implements encoding.TextMarshaler (and so JSON).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// answer is the bytes to type at a prompt: the secret with every control
// character quoted by VLNEXT (^V) so the tty's line discipline takes it
// literally, then a newline that ends the answer.
func (s Secret) answer() []byte {
	out := make([]byte, 0, len(s.b)+2)
	for _, c := range s.b {
		if c < 0x20 || c == 0x7f {
			out = append(out, 0x16)
		}
		out = append(out, c)
	}
	return append(out, '\n')
}

// scrubber makes a line the clients printed safe to publish (log, send as an
// event, quote in an error): it escapes what could drive a terminal and
// removes the secrets it was built with, also where they are broken up.
//
// For any input line, scrub returns a line out such that:
//
//  1. out is valid UTF-8 and holds no control character but tab: every other
//     C0 control, DEL, byte of invalid UTF-8, C1 control (U+0080–U+009F) and
//     bidirectional formatting character is written the way OpenSSH's log.c
//     writes them, a backslash and three octal digits per byte ("\033").
//  2. For every secret s: if len(s) >= 4, no substring of s of 4 bytes or
//     more occurs in any view of out below; if len(s) < 4, s itself occurs in
//     no view of out.
//
// The views of out are the ways a reader, or a careless decoder, can put
// broken-up text back together. Reading backslashes left to right, `\\` is a
// backslash and `\ooo` (first digit 0–3) is the byte with that octal value:
//
//   - out as it is;
//   - stripped: `\\` read as a backslash, every `\ooo` removed, then
//     controls removed (out's only one is tab);
//   - decoded: `\\` and every `\ooo` read as the byte they stand for;
//   - decoded, then every C0 control and DEL removed one byte at a time;
//   - decoded, then escape sequences removed whole (CSI: ESC [, parameter
//     bytes 0x30–0x3F, intermediate bytes 0x20–0x2F, a final byte 0x40–0x7E;
//     strings: ESC followed by one of ] P X ^ _, up to BEL, ESC \ or the next
//     ESC; others: ESC, intermediate bytes, a final byte 0x30–0x7E; any part
//     may be cut short by the end or an unexpected byte) and every other C0
//     control and DEL removed.
//
// So a secret printed whole, cut in two by a line end or a "\r" (each piece
// of 4 bytes or more is removed from its own line; a piece of at most 3 bytes
// can survive, as nothing in a line of its own tells it from any other text),
// interleaved with escape sequences ("S\x1b[0mecr3t"), backspaces or other
// controls ("Se\bcr3t"), or written with octal escapes by ssh ("Secr\0173t",
// "w\303\266rd" for "wörd") is gone. The tty's echo of a secret's control
// characters in caret notation ("^U") is matched too.
//
// What matches is replaced by one marker per stretch: "[redacted]", or,
// when a secret shares its brackets or a 4-byte piece of it, another marker
// that does not (in the end nothing: the stretch is deleted). It
// over-redacts: any stretch made of overlapping 4-byte windows of a secret is
// replaced, even where it is ordinary output ("Perm" of a password
// "Permit-42" in "Permission denied"). A caller that must recognize what a
// client printed should therefore look at the line before scrubbing it, and
// publish only the scrubbed one.
//
// A scrubber is never modified after newScrubber returns and is safe for
// concurrent use. A nil *scrubber, or one built without secrets, still does 1.
type scrubber struct {
	grams  map[uint32]struct{} // every 4-byte window of every long pattern
	pairs  []uint64            // bit set of the first two bytes of the grams
	short  [][]byte            // secrets shorter than 4 bytes, matched whole
	marker string
}

// minWindow is the length from which a piece of a secret is redacted wherever
// it occurs.
const minWindow = 4

// maxPasses bounds the scrub passes over one line. A pass replaces what
// matched; the next one checks that the replacement did not join pieces into
// a new match. Two passes are the rule; more than maxPasses only happen on
// hostile input, which then fails closed.
const maxPasses = 16

// markers are tried in order; the first that no secret can overlap is used.
var markers = []string{redacted, "(redacted)", "<redacted>", "{redacted}", "***", "###", "~~~", "%%%", "@@@", "==="}

// newScrubber returns a scrubber for the non-empty secrets.
func newScrubber(secrets ...Secret) *scrubber {
	s := &scrubber{grams: map[uint32]struct{}{}}
	var long [][]byte
	for _, sec := range secrets {
		b := sec.b
		switch {
		case len(b) == 0:
		case len(b) < minWindow:
			if !slices.ContainsFunc(s.short, func(x []byte) bool { return bytes.Equal(x, b) }) {
				s.short = append(s.short, b)
			}
		default:
			// The secret, and the forms it takes once a view has dropped
			// its controls or the tty echoed them in caret notation.
			raw := literal(b)
			for _, v := range [][]byte{b, raw.dropControls().b, raw.dropSequences().b, caret(b)} {
				if len(v) < minWindow {
					continue
				}
				long = append(long, v)
				for i := 0; i+minWindow <= len(v); i++ {
					s.grams[gram(v[i:])] = struct{}{}
				}
			}
		}
	}
	if len(s.grams) > 0 {
		s.pairs = make([]uint64, 1<<16/64)
		for g := range s.grams {
			p := g >> 16
			s.pairs[p/64] |= 1 << (p % 64)
		}
	}
	s.marker = pickMarker(long, s.short)
	return s
}

// pickMarker returns the first marker no secret can overlap, or "".
//
// A marker contains no backslash or control, so in every view what is left
// of it is a suffix of it (a sequence begun just before it may swallow a
// prefix). Text made of markers alone therefore matches a secret only if the
// secret shares a 4-byte window with the marker, holds a whole short secret,
// or spans into the next marker through the marker's last byte. Excluding
// that (and the first byte, so that nothing joins across a marker's edges),
// every match holds some byte that is not a marker's, each pass removes one,
// and scrubbing ends.
func pickMarker(long, short [][]byte) string {
next:
	for _, m := range markers {
		edges := m[:1] + m[len(m)-1:]
		for _, p := range long {
			if bytes.ContainsAny(p, edges) {
				continue next
			}
			for i := 0; i+minWindow <= len(p); i++ {
				if strings.Contains(m, string(p[i:i+minWindow])) {
					continue next
				}
			}
		}
		for _, p := range short {
			if bytes.ContainsAny(p, edges) || strings.Contains(m, string(p)) {
				continue next
			}
		}
		return m
	}
	return ""
}

// scrub returns text safe to publish: see scrubber. A line that still
// matches after maxPasses passes is replaced by the marker as a whole.
func (s *scrubber) scrub(text string) string {
	t := sanitize(text)
	if s == nil || len(s.grams) == 0 && len(s.short) == 0 {
		return t
	}
	for range maxPasses {
		spans := s.find(t)
		if len(spans) == 0 {
			return t
		}
		t = s.replace(t, spans)
	}
	return s.marker
}

// span is a stretch of a line, [lo, hi) in bytes.
type span struct{ lo, hi int }

// find returns the stretches of t that match in some view.
func (s *scrubber) find(t string) []span {
	spans := s.scan(view{b: []byte(t)}, nil)
	if !strings.ContainsAny(t, "\\\t") {
		return spans // every view is t itself
	}
	dec, esc := decode(t)
	stripped := newView(len(dec.b))
	for i, c := range dec.b {
		if !esc[i] {
			stripped.add(c, dec.start(i), dec.end(i))
		}
	}
	for _, v := range []view{stripped.dropSequences(), dec, dec.dropControls(), dec.dropSequences()} {
		spans = s.scan(v, spans)
	}
	return spans
}

// scan appends to spans the stretches of the line behind the matches in v.
func (s *scrubber) scan(v view, spans []span) []span {
	b := v.b
	add := func(i, j int) { spans = append(spans, span{v.start(i), v.end(j - 1)}) }
	if s.pairs != nil {
		from, to := 0, 0 // the run of overlapping matches being built
		for i := 0; i+minWindow <= len(b); i++ {
			p := uint(b[i])<<8 | uint(b[i+1])
			if s.pairs[p/64]&(1<<(p%64)) == 0 {
				continue
			}
			if _, ok := s.grams[gram(b[i:])]; !ok {
				continue
			}
			if i > to {
				if to > from {
					add(from, to)
				}
				from = i
			}
			to = i + minWindow
		}
		if to > from {
			add(from, to)
		}
	}
	for _, p := range s.short {
		for off := 0; ; {
			j := bytes.Index(b[off:], p)
			if j < 0 {
				break
			}
			add(off+j, off+j+len(p))
			off += j + 1
		}
	}
	return spans
}

// replace returns t with every span, widened to whole UTF-8 characters,
// replaced by the marker; spans that overlap or touch share one marker.
func (s *scrubber) replace(t string, spans []span) string {
	for i := range spans {
		sp := &spans[i]
		for sp.lo > 0 && sp.lo < len(t) && !utf8.RuneStart(t[sp.lo]) {
			sp.lo--
		}
		for sp.hi < len(t) && !utf8.RuneStart(t[sp.hi]) {
			sp.hi++
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo - b.lo })
	var b strings.Builder
	b.Grow(len(t) + len(s.marker))
	at := 0 // t[:at] is written
	for i := 0; i < len(spans); {
		lo, hi := spans[i].lo, spans[i].hi
		for i++; i < len(spans) && spans[i].lo <= hi; i++ {
			hi = max(hi, spans[i].hi)
		}
		b.WriteString(t[at:lo])
		b.WriteString(s.marker)
		at = hi
	}
	b.WriteString(t[at:])
	return b.String()
}

// gram is the 4-byte window at the start of b as a map key.
func gram(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// sanitize returns text with every control but tab, invalid UTF-8, C1 control
// and bidirectional formatting character octal-escaped, byte by byte.
func sanitize(text string) string {
	i := 0
	for i < len(text) && plain(text[i]) {
		i++
	}
	if i == len(text) {
		return text
	}
	var b strings.Builder
	b.Grow(len(text) + 16)
	b.WriteString(text[:i])
	for i < len(text) {
		c := text[i]
		n := 1
		escape := !plain(c)
		if c >= utf8.RuneSelf {
			var r rune
			r, n = utf8.DecodeRuneInString(text[i:])
			escape = r == utf8.RuneError && n == 1 || deceptive(r)
		}
		for _, c := range []byte(text[i : i+n]) {
			if escape {
				b.WriteByte('\\')
				b.WriteByte('0' + c>>6)
				b.WriteByte('0' + c>>3&7)
				b.WriteByte('0' + c&7)
			} else {
				b.WriteByte(c)
			}
		}
		i += n
	}
	return b.String()
}

// plain reports whether c is printable ASCII or tab.
func plain(c byte) bool { return c >= 0x20 && c < 0x7f || c == '\t' }

// deceptive reports whether r, a valid non-ASCII character, is a C1 control
// or changes how the text around it is laid out.
func deceptive(r rune) bool {
	switch {
	case r <= 0x9f, r == 0x061c, r == 0x200e, r == 0x200f,
		r >= 0x2028 && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// caret returns b with its controls written as a tty echoes them with
// ECHOCTL: "^U" for 0x15, "^?" for DEL.
func caret(b []byte) []byte {
	out := make([]byte, 0, len(b)+4)
	for _, c := range b {
		switch {
		case c < 0x20:
			out = append(out, '^', c+0x40)
		case c == 0x7f:
			out = append(out, '^', '?')
		default:
			out = append(out, c)
		}
	}
	return out
}

// view is one reading of a line: its bytes and, for each, the stretch of the
// line it stands for. Without lo and hi, byte i stands for itself.
type view struct {
	b      []byte
	lo, hi []int32 // lines are far shorter than 2 GiB
}

func newView(n int) view {
	return view{b: make([]byte, 0, n), lo: make([]int32, 0, n), hi: make([]int32, 0, n)}
}

func (v *view) add(c byte, lo, hi int) {
	v.b = append(v.b, c)
	v.lo = append(v.lo, int32(lo))
	v.hi = append(v.hi, int32(hi))
}

func (v *view) start(i int) int {
	if v.lo == nil {
		return i
	}
	return int(v.lo[i])
}

func (v *view) end(i int) int {
	if v.hi == nil {
		return i + 1
	}
	return int(v.hi[i])
}

// literal is b read as it is, in the form the filters take.
func literal(b []byte) view {
	v := newView(len(b))
	for i, c := range b {
		v.add(c, i, i+1)
	}
	return v
}

// decode reads t's backslashes: `\\` is a backslash, `\ooo` (first digit
// 0–3) the byte with that value. esc[i] tells that byte i came from `\ooo`.
func decode(t string) (v view, esc []bool) {
	v, esc = newView(len(t)), make([]bool, 0, len(t))
	oct := func(c byte, top byte) bool { return c >= '0' && c <= top }
	for i := 0; i < len(t); {
		switch {
		case t[i] == '\\' && i+1 < len(t) && t[i+1] == '\\':
			v.add('\\', i, i+2)
			esc = append(esc, false)
			i += 2
		case t[i] == '\\' && i+3 < len(t) && oct(t[i+1], '3') && oct(t[i+2], '7') && oct(t[i+3], '7'):
			v.add((t[i+1]-'0')<<6|(t[i+2]-'0')<<3|(t[i+3]-'0'), i, i+4)
			esc = append(esc, true)
			i += 4
		default:
			v.add(t[i], i, i+1)
			esc = append(esc, false)
			i++
		}
	}
	return v, esc
}

// control reports whether c is a C0 control or DEL.
func control(c byte) bool { return c < 0x20 || c == 0x7f }

// dropControls returns v without its C0 controls and DEL.
func (v view) dropControls() view {
	out := newView(len(v.b))
	for i, c := range v.b {
		if !control(c) {
			out.add(c, v.start(i), v.end(i))
		}
	}
	return out
}

// dropSequences returns v without its escape sequences (as a terminal reads
// them; see scrubber) and its other C0 controls and DEL.
func (v view) dropSequences() view {
	out := newView(len(v.b))
	b := v.b
	in := func(i int, lo, hi byte) bool { return i < len(b) && b[i] >= lo && b[i] <= hi }
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == 0x1b:
			i++
			switch {
			case in(i, '[', '['):
				i++
				for in(i, 0x30, 0x3f) {
					i++
				}
				for in(i, 0x20, 0x2f) {
					i++
				}
				if in(i, 0x40, 0x7e) {
					i++
				}
			case i < len(b) && strings.IndexByte("]PX^_", b[i]) >= 0:
				for i++; i < len(b) && b[i] != 0x07 && b[i] != 0x1b; i++ {
				}
				if in(i, 0x07, 0x07) {
					i++
				} else if in(i, 0x1b, 0x1b) && in(i+1, '\\', '\\') {
					i += 2
				}
			default:
				for in(i, 0x20, 0x2f) {
					i++
				}
				if in(i, 0x30, 0x7e) {
					i++
				}
			}
		case control(c):
			i++
		default:
			out.add(c, v.start(i), v.end(i))
			i++
		}
	}
	return out
}
