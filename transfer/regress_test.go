package transfer

import (
	"strings"
	"testing"
)

// Regression tests for engine bugs the integration tests found.

// A client that dies mid-file prints its error right after the last meter
// frame, with no line end between them: the error is still a line of its
// own, so it is classified.
func TestErrorAfterAFrameIsALine(t *testing.T) {
	s := &session{spec: sessionSpec{scrub: newScrubber()}, activity: make(chan struct{}, 1), establish: make(chan struct{})}
	var frames []Progress
	s.spec.onFrame = func(p Progress, _ string) { frames = append(frames, p) }
	frame := meterFrame(6, 100)
	if len(frame) != meterWidth {
		t.Fatalf("frame of %d bytes", len(frame))
	}
	s.line(frame + "Connection closed")
	if len(frames) != 1 || frames[0].Percent != 6 {
		t.Errorf("frames %+v, want the 6%% frame", frames)
	}
	if len(s.recent) != 1 || s.recent[0] != "Connection closed" {
		t.Fatalf("lines %q", s.recent)
	}
	if e := classify(s.recent, 255); e.Class != ClassLostConnection {
		t.Errorf("classified as %s", e.Class)
	}
	// A long line that is not a frame stays whole.
	long := strings.Repeat("x", meterWidth+20)
	s.line(long)
	if s.recent[len(s.recent)-1] != long {
		t.Errorf("a long line was split: %q", s.recent)
	}
}

// sftp quotes the server's own status message, which servers other than
// OpenSSH's word their own way (Go's pkg/sftp, behind the built-in server).
func TestClassifyServerWordedMessages(t *testing.T) {
	cases := []struct {
		line string
		want Class
	}{
		{"realpath /srv/in/no/dir: lstat /srv/in/no: no such file or directory", ClassRemotePath},
		{`Can't change directory: "/srv/in": permission denied`, ClassRemotePermission},
		{`remote mkdir "/srv/in/sub": Permission Denied`, ClassRemotePermission},
	}
	for _, c := range cases {
		if e := classify([]string{c.line}, 1); e.Class != c.want {
			t.Errorf("%q: %s, want %s", c.line, e.Class, c.want)
		}
	}
}

// The host-key probe answers for a target that trusts no key and holds no
// credential, whatever the real target's policy.
func TestProbeTargetTrustsNothing(t *testing.T) {
	tg := Target{Host: "h", User: "u", HostKey: "SHA256:" + strings.Repeat("A", 43), Identity: "/k",
		Password: NewSecret([]byte("p")), Passphrase: NewSecret([]byte("q"))}
	p := probeTarget(&tg)
	if p.HostKey == tg.HostKey || !p.Pinned() || !p.Password.IsZero() || !p.Passphrase.IsZero() || p.Identity != "" {
		t.Errorf("probe target %+v", p)
	}
	args := strings.Join(probeArgs(&tg), " ")
	if strings.Contains(args, "IdentityFile") || !strings.Contains(args, "UserKnownHostsFile=/dev/null") {
		t.Errorf("probe argv %s", args)
	}
}
