package transfer

import (
	"bytes"
	"fmt"
	"log/slog"
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

// scrubber removes every occurrence of the secrets it knows from text that is
// about to be published.
type scrubber struct {
	secrets [][]byte
}

func newScrubber(secrets ...Secret) *scrubber {
	s := &scrubber{}
	for _, sec := range secrets {
		if !sec.IsZero() {
			s.secrets = append(s.secrets, sec.b)
		}
	}
	return s
}

// scrub returns text with every known secret replaced by "[redacted]".
func (s *scrubber) scrub(text string) string {
	if s == nil {
		return text
	}
	b := []byte(text)
	changed := false
	for _, sec := range s.secrets {
		if bytes.Contains(b, sec) {
			b = bytes.ReplaceAll(b, sec, []byte(redacted))
			changed = true
		}
	}
	if !changed {
		return text
	}
	return string(b)
}
