package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// The CloudEvents NATS protocol binding has two content modes. In the
// structured mode (dropship's default) the message payload is the whole
// event as JSON, with Content-Type application/cloudevents+json. In the
// binary mode the payload is the event's data as it is, the attributes
// travel in headers named "ce-" plus the attribute name, and Content-Type
// is the event's datacontenttype. Header values are percent-encoded as the
// binding requires: every byte of the value's UTF-8 form outside printable
// US-ASCII (0x21 to 0x7E), and space, '"' and '%', becomes %XX.

// Header names of the binary mode.
const (
	ceSpecVersion = "ce-specversion"
	ceID          = "ce-id"
	ceSource      = "ce-source"
	ceType        = "ce-type"
	ceSubject     = "ce-subject"
	ceTime        = "ce-time"
)

// CloudEvents content modes, as [nats] cloudevents_mode names them.
const (
	ModeStructured = "structured"
	ModeBinary     = "binary"
)

// SetCloudEventsMode chooses how events are published: ModeStructured (the
// default) or ModeBinary. Readers accept both whatever the mode.
func (b *Bus) SetCloudEventsMode(mode string) { b.binary.Store(mode == ModeBinary) }

// binaryMessage is ev as a binary-mode message on its subject.
func binaryMessage(ev Event) *nats.Msg {
	msg := nats.NewMsg(ev.NATSSubject)
	msg.Header.Set(ceSpecVersion, percentEncode(ev.SpecVersion))
	msg.Header.Set(ceID, percentEncode(ev.ID))
	msg.Header.Set(ceSource, percentEncode(ev.Source))
	msg.Header.Set(ceType, percentEncode(ev.Type))
	if ev.Subject != "" {
		msg.Header.Set(ceSubject, percentEncode(ev.Subject))
	}
	msg.Header.Set(ceTime, ev.Time.UTC().Format(time.RFC3339Nano))
	ct := ev.DataContentType
	if ct == "" {
		ct = "application/json"
	}
	msg.Header.Set("Content-Type", ct)
	msg.Data = ev.Data
	return msg
}

// parseBinary decodes a binary-mode message's headers and payload.
func parseBinary(h nats.Header, data []byte) (Event, error) {
	get := func(k string) (string, error) {
		v, err := percentDecode(h.Get(k))
		if err != nil {
			return "", fmt.Errorf("decode event: header %s: %w", k, err)
		}
		return v, nil
	}
	var ev Event
	var err error
	for _, f := range []struct {
		key string
		dst *string
	}{{ceSpecVersion, &ev.SpecVersion}, {ceID, &ev.ID}, {ceSource, &ev.Source}, {ceType, &ev.Type}, {ceSubject, &ev.Subject}} {
		if *f.dst, err = get(f.key); err != nil {
			return Event{}, err
		}
	}
	if t := h.Get(ceTime); t != "" {
		if ev.Time, err = time.Parse(time.RFC3339Nano, t); err != nil {
			return Event{}, fmt.Errorf("decode event %s: header %s: %w", ev.ID, ceTime, err)
		}
	}
	ev.DataContentType = h.Get("Content-Type")
	if !json.Valid(data) {
		return Event{}, fmt.Errorf("decode event %s: the payload is not JSON", ev.ID)
	}
	ev.Data = json.RawMessage(data)
	return ev, checkParsed(ev)
}

// ParseHeaders decodes an event from a message's headers and payload, in
// either content mode.
func ParseHeaders(h nats.Header, data []byte) (Event, error) {
	if h != nil && h.Get(ceSpecVersion) != "" {
		return parseBinary(h, data)
	}
	return Parse(data)
}

func percentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || c == '"' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func percentDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("bad percent-encoding in %q", s)
		}
		var v byte
		if _, err := fmt.Sscanf(s[i+1:i+3], "%02X", &v); err != nil {
			return "", fmt.Errorf("bad percent-encoding in %q", s)
		}
		b.WriteByte(v)
		i += 2
	}
	return b.String(), nil
}
