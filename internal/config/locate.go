package config

import (
	"strconv"
	"strings"
)

// locator maps key paths of a TOML document to the line where they are
// defined. BurntSushi/toml does not export key positions, so this is a small
// scanner of its own, run over text the decoder has already accepted. It
// follows [table] and [[array]] headers (counting array elements), dotted and
// quoted keys, multi-line strings, arrays and inline tables, and is tolerant of
// anything else: on malformed input it guesses, and it never panics.
//
// A path is the sequence of keys from the document root, with the decimal
// index of an element inside an array of tables or an array value:
// ("target", "1", "port") is the port key of the second [[target]].
type locator struct {
	lines map[string]int
}

// line returns the line (from 1) where path is defined, or 0 when unknown.
// A table's line is that of its header, or of its first mention when a
// header defines one of its sub-tables or a dotted key creates it; an array
// element's line is where the element starts.
func (l *locator) line(path ...string) int {
	return l.lines[joinPath(path)]
}

// stripBOM removes a byte order mark, UTF-8 or (as the TOML decoder
// tolerates it) UTF-16, from the start of src.
func stripBOM(src string) string {
	for _, bom := range []string{"\xef\xbb\xbf", "\xff\xfe", "\xfe\xff"} {
		if s, ok := strings.CutPrefix(src, bom); ok {
			return s
		}
	}
	return src
}

func joinPath(path []string) string { return strings.Join(path, "\x00") }

// maxDepth bounds the nesting of arrays and inline tables the scanner
// follows, so hostile input cannot exhaust the stack; deeper values are
// skipped whole. Parse refuses such files before the scanner runs.
const maxDepth = maxNesting

type scanner struct {
	src    string
	pos    int
	line   int
	lines  map[string]int
	arrays map[string]int // resolved array-of-tables path → elements seen
}

// locate scans src and returns the line of every key, table and array
// element it finds.
func locate(src string) *locator {
	s := &scanner{src: stripBOM(src), line: 1, lines: map[string]int{}, arrays: map[string]int{}}
	var table []string
	for s.pos < len(s.src) {
		start := s.pos
		s.skipBlank()
		if s.pos >= len(s.src) {
			break
		}
		switch s.src[s.pos] {
		case '\n':
			s.pos++
			s.line++
		case '#':
			s.skipLine()
		case '[':
			table = s.header()
		default:
			s.keyValue(table, 0)
			s.skipLine()
		}
		if s.pos == start {
			s.pos++ // always make progress
		}
	}
	return &locator{lines: s.lines}
}

// header reads a [table] or [[array]] header and returns the resolved path of
// the table it opens.
func (s *scanner) header() []string {
	s.pos++ // [
	array := s.peek('[')
	if array {
		s.pos++
	}
	keys := s.key()
	s.skipLine()
	if len(keys) == 0 {
		return nil
	}
	if !array {
		path := s.resolve(keys)
		s.mark(path)
		return path
	}
	parent := s.resolve(keys[:len(keys)-1])
	arr := append(parent, keys[len(keys)-1])
	s.mark(arr)
	k := joinPath(arr)
	n := s.arrays[k]
	s.arrays[k] = n + 1
	path := append(arr, strconv.Itoa(n))
	s.lines[joinPath(path)] = s.line
	return path
}

// resolve turns header keys into a path, inserting the index of the current
// element after every array of tables on the way, as TOML does.
func (s *scanner) resolve(keys []string) []string {
	var path []string
	for _, k := range keys {
		path = append(path, k)
		if n, ok := s.arrays[joinPath(path)]; ok && n > 0 {
			path = append(path, strconv.Itoa(n-1))
		}
	}
	return path
}

// mark records the line of path and of every prefix not seen before. A
// path seen before had its prefixes marked with it, so the walk from the
// longest prefix stops at the first one known: marking the elements of a
// long array costs time in their number, not in its square.
func (s *scanner) mark(path []string) {
	for i := len(path); i >= 1; i-- {
		k := joinPath(path[:i])
		if _, ok := s.lines[k]; ok {
			return
		}
		s.lines[k] = s.line
	}
}

// keyValue reads `key = value` inside table and records the key's line.
func (s *scanner) keyValue(table []string, depth int) {
	keys := s.key()
	if len(keys) == 0 {
		return
	}
	path := append(append([]string(nil), table...), keys...)
	s.mark(path)
	s.skipBlank()
	if !s.peek('=') {
		return
	}
	s.pos++
	s.skipBlank()
	s.value(path, depth)
}

// value skips one value, recording the keys of inline tables and the
// elements of arrays under path.
func (s *scanner) value(path []string, depth int) {
	if s.pos >= len(s.src) {
		return
	}
	switch s.src[s.pos] {
	case '"', '\'':
		s.str()
	case '[', '{':
		if depth >= maxDepth {
			s.skipNested()
			return
		}
		s.pos++
		if s.src[s.pos-1] == '[' {
			s.array(path, depth+1)
		} else {
			s.inlineTable(path, depth+1)
		}
	default:
		for s.pos < len(s.src) && !strings.ContainsRune(",]}\n#", rune(s.src[s.pos])) {
			s.pos++
		}
	}
}

func (s *scanner) array(path []string, depth int) {
	for i := 0; s.pos < len(s.src); {
		start := s.pos
		s.skipSpace()
		if s.pos >= len(s.src) {
			return
		}
		switch s.src[s.pos] {
		case ']':
			s.pos++
			return
		case '}':
			return // malformed; let the caller deal with it
		case ',':
			s.pos++
			i++
		default:
			elem := append(append([]string(nil), path...), strconv.Itoa(i))
			s.mark(elem)
			s.value(elem, depth)
		}
		if s.pos == start {
			s.pos++
		}
	}
}

func (s *scanner) inlineTable(path []string, depth int) {
	for s.pos < len(s.src) {
		start := s.pos
		s.skipSpace()
		if s.pos >= len(s.src) {
			return
		}
		switch s.src[s.pos] {
		case '}':
			s.pos++
			return
		case ']':
			return // malformed
		case ',':
			s.pos++
		default:
			s.keyValue(path, depth)
		}
		if s.pos == start {
			s.pos++
		}
	}
}

// key reads a possibly dotted key made of bare and quoted parts.
func (s *scanner) key() []string {
	var keys []string
	for {
		s.skipBlank()
		if s.pos >= len(s.src) {
			return keys
		}
		switch c := s.src[s.pos]; {
		case c == '"' || c == '\'':
			start := s.pos
			s.str()
			keys = append(keys, unquoteKey(s.src[start:s.pos]))
		case isBare(c):
			start := s.pos
			for s.pos < len(s.src) && isBare(s.src[s.pos]) {
				s.pos++
			}
			keys = append(keys, s.src[start:s.pos])
		default:
			return keys
		}
		s.skipBlank()
		if !s.peek('.') {
			return keys
		}
		s.pos++
	}
}

// isBare reports whether c may be part of a bare key. It is wider than TOML's
// A-Za-z0-9_- so that non-ASCII keys the decoder may accept are kept whole.
func isBare(c byte) bool {
	return !strings.ContainsRune(" \t\r\n=.[]{},#\"'", rune(c))
}

// unquoteKey returns the key a quoted key stands for.
func unquoteKey(q string) string {
	if len(q) < 2 || q[0] != q[len(q)-1] {
		return strings.Trim(q, `"'`) // unterminated: only on malformed input
	}
	body := q[1 : len(q)-1]
	if q[0] == '\'' {
		return body
	}
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c != '\\' || i+1 >= len(body) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := body[i]; e {
		case 'b':
			b.WriteByte('\b')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'f':
			b.WriteByte('\f')
		case 'r':
			b.WriteByte('\r')
		case 'e':
			b.WriteByte(0x1b)
		case 'x', 'u', 'U':
			n := 2
			if e == 'u' {
				n = 4
			} else if e == 'U' {
				n = 8
			}
			if i+n < len(body) {
				if r, err := strconv.ParseUint(body[i+1:i+1+n], 16, 32); err == nil {
					b.WriteRune(rune(r))
					i += n
					continue
				}
			}
			b.WriteByte('\\')
			b.WriteByte(e)
		default: // \" and \\, and anything invalid
			b.WriteByte(e)
		}
	}
	return b.String()
}

// str skips a basic, literal or multi-line string starting at s.pos.
func (s *scanner) str() {
	defer func() { s.pos = min(s.pos, len(s.src)) }() // an escape may skip past the end
	q := s.src[s.pos]
	if strings.HasPrefix(s.src[s.pos:], strings.Repeat(string(q), 3)) {
		s.pos += 3
		for s.pos < len(s.src) {
			c := s.src[s.pos]
			switch {
			case c == '\n':
				s.line++
			case c == '\\' && q == '"':
				s.pos++
				if s.pos < len(s.src) && s.src[s.pos] == '\n' {
					s.line++
				}
			case c == q && strings.HasPrefix(s.src[s.pos:], strings.Repeat(string(q), 3)):
				s.pos += 3
				// Up to two more quotes belong to the content.
				for n := 0; n < 2 && s.peek(q); n++ {
					s.pos++
				}
				return
			}
			s.pos++
		}
		return
	}
	s.pos++
	for s.pos < len(s.src) {
		c := s.src[s.pos]
		switch {
		case c == '\n':
			return // unterminated; the newline is the caller's
		case c == '\\' && q == '"':
			s.pos++
			if s.pos < len(s.src) && s.src[s.pos] == '\n' {
				return
			}
		case c == q:
			s.pos++
			return
		}
		s.pos++
	}
}

// skipNested skips the array or inline table that starts at s.pos, however
// deep, without recording anything in it: in one pass, counting brackets
// outside strings and comments.
func (s *scanner) skipNested() {
	open := 0
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case '"', '\'':
			s.str()
			continue
		case '#':
			s.skipComment()
			continue
		case '\n':
			s.line++
		case '[', '{':
			open++
		case ']', '}':
			open--
		}
		s.pos++
		if open <= 0 {
			return
		}
	}
}

func (s *scanner) peek(c byte) bool { return s.pos < len(s.src) && s.src[s.pos] == c }

// skipBlank skips spaces, tabs and carriage returns on the current line.
func (s *scanner) skipBlank() {
	for s.pos < len(s.src) && (s.src[s.pos] == ' ' || s.src[s.pos] == '\t' || s.src[s.pos] == '\r') {
		s.pos++
	}
}

// skipSpace skips blanks, newlines and comments, as found inside arrays.
func (s *scanner) skipSpace() {
	for s.pos < len(s.src) {
		switch s.src[s.pos] {
		case ' ', '\t', '\r':
			s.pos++
		case '\n':
			s.pos++
			s.line++
		case '#':
			s.skipComment()
		default:
			return
		}
	}
}

// skipLine skips to the end of the current line, leaving the newline.
func (s *scanner) skipLine() { s.skipComment() }

func (s *scanner) skipComment() {
	if i := strings.IndexByte(s.src[s.pos:], '\n'); i >= 0 {
		s.pos += i
	} else {
		s.pos = len(s.src)
	}
}
