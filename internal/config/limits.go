package config

import "fmt"

// Bounds on the shape of a configuration file. dropship's own keys nest at
// most three deep ([[target]] → ssh_options → element) and a real file has a
// few dozen tables, so these are far beyond any honest configuration. They
// exist because the TOML decoder takes time that grows faster than the input
// with deep nesting and with many tables or keys: checking them first, in one
// linear pass, keeps `dropship check` fast on any file.
const (
	// maxNesting bounds how many arrays and inline tables may be open at
	// once, and how many parts a dotted key or a table header may have.
	maxNesting = 32
	// maxTables bounds the number of [table] and [[array]] headers: a
	// thousand targets and a thousand watches.
	maxTables = 2000
	// maxItems bounds the number of keys and array elements together.
	maxItems = 20000
)

// checkShape scans src once, in linear time, and reports the first place
// where it nests deeper than maxNesting or holds more than maxTables tables
// or maxItems keys and array elements: the line and a message, or 0 and "".
// It understands comments and every kind of string, so brackets, dots and
// commas inside them do not count; on malformed input it may count wrong,
// which the decoder then reports anyway.
func checkShape(src string) (line int, msg string) {
	var (
		stack  []byte // open '[' and '{', innermost last
		line0  = 1
		tables int
		items  int
		parts  int    // parts of the dotted key being read
		inKey  = true // reading a key: at the start of a statement or of an inline table entry
		header bool   // reading a [table] or [[array]] header
		fresh  = true
	)
	deep := func() (int, string) {
		return line0, fmt.Sprintf("nesting deeper than %d (arrays, inline tables or the parts of a dotted key); dropship's configuration needs at most 3", maxNesting)
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch c {
		case '\n':
			line0++
			if len(stack) == 0 {
				fresh, inKey, header, parts = true, true, false, 0
			}
			continue
		case ' ', '\t', '\r':
			continue
		case '#':
			for i+1 < len(src) && src[i+1] != '\n' {
				i++
			}
			continue
		case '"', '\'':
			i = skipString(src, i, &line0) - 1
			fresh = false
			continue
		}
		atStart := fresh && len(stack) == 0
		fresh = false
		switch c {
		case '[':
			if atStart {
				tables++
				if tables > maxTables {
					return line0, fmt.Sprintf("more than %d tables; dropship's configuration needs one per target and watch", maxTables)
				}
				header, inKey, parts = true, true, 0
			}
			if header && i+1 < len(src) && src[i+1] == '[' && len(stack) == 0 {
				i++ // [[array]]: one header, one level
			}
			stack = append(stack, '[')
			if len(stack) > maxNesting {
				return deep()
			}
			continue
		case '{':
			stack = append(stack, '{')
			if len(stack) > maxNesting {
				return deep()
			}
			inKey, parts = true, 0
			continue
		case ']', '}':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			if header && len(stack) == 0 {
				header, inKey = false, false
				if i+1 < len(src) && src[i+1] == ']' {
					i++
				}
			}
			continue
		case '=':
			inKey = false
			items++
		case ',':
			if len(stack) > 0 {
				items++
				if stack[len(stack)-1] == '{' {
					inKey, parts = true, 0
				}
			}
		case '.':
			if inKey {
				parts++
				if parts >= maxNesting {
					return deep()
				}
			}
		}
		if items > maxItems {
			return line0, fmt.Sprintf("more than %d keys and array elements", maxItems)
		}
	}
	return 0, ""
}

// skipString returns the index just past the string that starts at src[i]
// (a quote), counting the newlines of a multi-line string into line. An
// unterminated single-line string ends before its newline.
func skipString(src string, i int, line *int) int {
	q := src[i]
	if i+2 < len(src) && src[i+1] == q && src[i+2] == q {
		for j := i + 3; j < len(src); j++ {
			switch {
			case src[j] == '\n':
				*line++
			case src[j] == '\\' && q == '"':
				if j+1 < len(src) && src[j+1] == '\n' {
					*line++
				}
				j++
			case src[j] == q && j+2 < len(src) && src[j+1] == q && src[j+2] == q:
				j += 3
				for n := 0; n < 2 && j < len(src) && src[j] == q; n++ {
					j++ // up to two more quotes belong to the content
				}
				return j
			}
		}
		return len(src)
	}
	for j := i + 1; j < len(src); j++ {
		switch {
		case src[j] == '\n':
			return j
		case src[j] == '\\' && q == '"':
			if j+1 < len(src) && src[j+1] == '\n' {
				return j + 1
			}
			j++
		case src[j] == q:
			return j + 1
		}
	}
	return len(src)
}
