package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
)

// TestPasswordLoginWithPinnedKey sends through the built-in SFTP server with
// a password read from a 0600 password_file, answered at the pty's prompt,
// and the server's host key pinned by fingerprint.
func TestPasswordLoginWithPinnedKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "correct horse battery staple")
	e.sftpdTarget("partner", srv, "alice", "correct horse battery staple")
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, n.url())
	startAgent(t, e.cfg)
	data := []byte("sent with a password\n")
	writeFile(t, filepath.Join(e.watch, "invoice 42.txt"), data)

	eventually(t, 30*time.Second, "the file on the remote and its completed event", func() bool {
		return sameContent(filepath.Join(e.remote, "invoice 42.txt"), data) && len(c.ofType(events.TypeTransferCompleted)) == 1
	})
	d := c.ofType(events.TypeTransferCompleted)[0].transfer(t)
	if d.SizeBytes != int64(len(data)) || d.SHA256 != sha256Hex(data) {
		t.Errorf("completed event: %d bytes, sha256 %s; want %d, %s", d.SizeBytes, d.SHA256, len(data), sha256Hex(data))
	}
	st := srv.Stats()
	if st.AuthAttempts["password"] < 1 || st.Logins < 1 {
		t.Errorf("sftpd saw %d password attempts and %d logins; the login was not a password login", st.AuthAttempts["password"], st.Logins)
	}
	eventually(t, 10*time.Second, "the source archived", func() bool {
		return sameContent(filepath.Join(e.watch, ".dropship-sent", "invoice 42.txt"), data)
	})
	for _, m := range c.all() {
		if strings.Contains(string(m.raw), "correct horse") {
			t.Errorf("the password appears in an event on %s:\n%s", m.subject, m.raw)
		}
	}
}

// TestWrongPinSendsNothing pins a fingerprint the server's key does not
// have: the connection is refused before any password is offered, a failed
// event of a host-key class is published, and the file stays where it is.
func TestWrongPinSendsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.externalNATS()
	srv := sftpdServer(t, e.remote, "alice", "secret")
	e.sftpdTarget("partner", srv, "alice", "secret").set("host_key", otherFingerprint(t))
	e.watchFor("partner")
	e.writeConf()

	c := collect(t, n.url())
	startAgent(t, e.cfg)
	data := []byte("must not leave\n")
	src := filepath.Join(e.watch, "secret.txt")
	writeFile(t, src, data)

	eventually(t, 30*time.Second, "a failed event", func() bool {
		return len(c.ofType(events.TypeTransferFailed)) > 0
	})
	m := c.ofType(events.TypeTransferFailed)[0]
	checkEnvelope(t, m, "partner", events.TransferFailed)
	d := m.transfer(t)
	if d.Error == nil || !strings.HasPrefix(d.Error.Class, "hostkey") {
		t.Errorf("failed event error %+v, want a host-key class", d.Error)
	}
	if d.Error != nil && d.Error.Class != "hostkey-mismatch" {
		t.Errorf("class %q, want hostkey-mismatch for a pin the key does not match", d.Error.Class)
	}
	if got := srv.Stats().AuthAttempts["password"]; got != 0 {
		t.Errorf("sftpd saw %d password attempts; a wrong pin must stop the login before the password is sent", got)
	}
	if got := names(e.remote); len(got) != 0 {
		t.Errorf("remote folder holds %q, want nothing", got)
	}
	if !sameContent(src, data) {
		t.Error("the source was moved or changed after a failed transfer")
	}
}
