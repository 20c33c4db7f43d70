package transfer

// maxSegment bounds the memory one unterminated segment may take. OpenSSH never
// prints lines this long; a peer that does gets its output cut into pieces.
const maxSegment = 16 << 10

// tokenizer splits what an OpenSSH client writes to its pty into lines and
// progress frames, in one pass over the bytes (linear in the output size).
//
// On a pty, log lines end in "\r\r\n" and plain output in "\r\n"; the progress
// meter writes "\r" followed by a frame, overwriting the previous one; prompts
// start with a lone "\r" and have no line end at all. So: a segment ended by
// "\n" (after any number of "\r") is a line; a segment ended by "\r" and
// followed by something other than "\r" or "\n" is a frame; the unterminated
// rest is the tail, where prompts are looked for.
type tokenizer struct {
	cur       []byte
	pendingCR bool
	onLine    func(string)
	onFrame   func(string)
}

// Write feeds output to the tokenizer. It never fails.
func (t *tokenizer) Write(p []byte) (int, error) {
	for _, c := range p {
		switch {
		case c == '\n':
			t.emitLine()
		case c == '\r':
			t.pendingCR = true
		default:
			if t.pendingCR {
				t.pendingCR = false
				if len(t.cur) > 0 {
					t.emit(t.onFrame)
				}
			}
			if len(t.cur) >= maxSegment {
				t.emitLine()
			}
			t.cur = append(t.cur, c)
		}
	}
	return len(p), nil
}

// Tail is the current unterminated segment: the text after the last "\r" or
// "\n". A prompt, when one is waiting, is here.
func (t *tokenizer) Tail() string { return string(t.cur) }

// Flush ends the output: an unterminated segment becomes a last line.
func (t *tokenizer) Flush() {
	if len(t.cur) > 0 {
		t.emitLine()
	}
	t.pendingCR = false
}

func (t *tokenizer) emitLine() {
	t.pendingCR = false
	if len(t.cur) == 0 {
		return
	}
	t.emit(t.onLine)
}

func (t *tokenizer) emit(fn func(string)) {
	s := string(t.cur)
	t.cur = t.cur[:0]
	if fn != nil {
		fn(s)
	}
}
