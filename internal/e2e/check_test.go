package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dropship/dropship/internal/sshdtest"
)

// TestCheckReportsEveryProblem runs `dropship check` on a file with one
// mistake of each kind: every one is reported at once, on its own line, as
// FILE:LINE: key: message, and the exit status is 2.
func TestCheckReportsEveryProblem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw := filepath.Join(dir, "partner.password")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pw, 0o640); err != nil { // past the umask
		t.Fatal(err)
	}
	lines := []string{
		`[agent]`,                             // 1
		`name = "e2e"`,                        // 2
		`state_dir = "` + dir + `/state"`,     // 3
		`colour = "blue"`,                     // 4: unknown key
		``,                                    // 5
		`[nats]`,                              // 6
		`publish_logs = "yes"`,                // 7: wrong type
		``,                                    // 8
		`[[target]]`,                          // 9
		`name = "partner"`,                    // 10
		`host = "127.0.0.1"`,                  // 11
		`user = "alice"`,                      // 12
		`password_file = "` + pw + `"`,        // 13: readable by the group
		`connect_timeout = "5 parsecs"`,       // 14: bad duration
		`remote_dir = "/incoming"`,            // 15
		``,                                    // 16
		`[[watch]]`,                           // 17
		`path = "` + dir + `/no such folder"`, // 18: missing folder
		`target = "partenr"`,                  // 19: unknown target
	}
	cfg := filepath.Join(dir, "broken.toml")
	if err := os.WriteFile(cfg, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"4: agent.colour",
		"7: nats.publish_logs",
		"13: target.password_file",
		"14: target.connect_timeout",
		"18: watch.path",
		"19: watch.target",
	}

	r := dropship(t, "check", "-c", cfg)
	if r.code != 2 {
		t.Errorf("exit status %d, want 2\n%s", r.code, r)
	}
	problem := regexp.MustCompile(`^` + regexp.QuoteMeta(cfg) + `:(\d+): ([a-z_.]+): (.+)$`)
	var got []string
	for line := range strings.Lines(r.stdout + r.stderr) {
		line = strings.TrimSuffix(line, "\n")
		m := problem.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		got = append(got, m[1]+": "+m[2])
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems reported as FILE:LINE: key:\n  %s\nwant\n  %s\n%s", strings.Join(got, "\n  "), strings.Join(want, "\n  "), r)
	}
}

// TestCheckAcceptsGoodConfig: a valid file exits 0 and says so, without
// contacting anything.
func TestCheckAcceptsGoodConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.conf.get("[nats]").set("url", "nats://127.0.0.1:1")
	e.target("partner", "127.0.0.1", 1, "alice").
		set("password_file", e.secretFile("partner.password", "secret\n")).
		set("host_key", otherFingerprint(t))
	e.watchFor("partner")
	e.writeConf()

	r := dropship(t, "check", "-c", e.cfg)
	if r.code != 0 || !strings.Contains(r.stdout, "ok") {
		t.Errorf("check of a valid config: %s", r)
	}
}

// TestCheckConnect logs in to every target with `check -connect`: a strict
// host key against known_hosts, a pinned key and a password login are ok; a
// wrong pin, a refused port and a missing remote_dir are FAILED with their
// class, and the exit status is then 1. Nothing is written to the remote.
func TestCheckConnect(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	e.externalNATS() // checked too: with auto_create_stream, a missing stream is the agent's to create
	e.sshdTarget(srv)
	e.target("pinned", srv.Host, srv.Port, srv.User).
		set("identity_file", srv.ClientKey).
		set("host_key", srv.HostKeyFingerprint)
	const password = "Tr0ub4dor&3-e2e"
	sftp := sftpdServer(t, e.remote, "alice", password)
	e.sftpdTarget("password", sftp, "alice", password)
	good := e.conf.String()
	e.target("badpin", srv.Host, srv.Port, srv.User).
		set("identity_file", srv.ClientKey).
		set("host_key", otherFingerprint(t))
	e.target("refused", "127.0.0.1", freePort(t), srv.User).
		set("identity_file", srv.ClientKey).
		set("host_key", srv.HostKeyFingerprint)
	e.target("nodir", srv.Host, srv.Port, srv.User).
		set("identity_file", srv.ClientKey).
		set("host_key", srv.HostKeyFingerprint).
		set("remote_dir", filepath.Join(e.dir, "no such folder"))
	e.writeConf()

	r := dropship(t, "check", "-connect", "-c", e.cfg)
	if r.code != 1 {
		t.Errorf("exit status %d, want 1 when a target fails\n%s", r.code, r)
	}
	for _, want := range []string{
		"target sshd: ok",
		"target pinned: ok",
		"target password: ok",
		"target badpin: FAILED (hostkey-mismatch)",
		"target refused: FAILED (connect-refused)",
		"target nodir: FAILED (remote-path)",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("check -connect does not say %q\n%s", want, r)
		}
	}
	if got := sftp.Stats().Logins; got != 1 {
		t.Errorf("sftpd saw %d logins, want 1", got)
	}

	goodCfg := filepath.Join(e.dir, "good.toml")
	if err := os.WriteFile(goodCfg, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	r = dropship(t, "check", "-connect", "-c", goodCfg)
	if r.code != 0 || strings.Contains(r.stdout, "FAILED") || !strings.Contains(r.stdout, "nats: ok: nats-server") {
		t.Errorf("check -connect with working targets: %s", r)
	}
	if got := names(e.remote); len(got) != 0 {
		t.Errorf("check -connect left %q on the remote", got)
	}
	if strings.Contains(r.stdout+r.stderr, password) {
		t.Errorf("check -connect printed the password:\n%s", r)
	}
}

// TestHostkey prints a target's host key fingerprint with `dropship
// hostkey`, ready to pin: the one the server really has.
func TestHostkey(t *testing.T) {
	t.Parallel()
	srv := sshdtest.Start(t, sshdtest.Options{})
	e := newEnv(t)
	e.conf.get("[nats]").set("url", "nats://127.0.0.1:1")
	e.target("sshd", srv.Host, srv.Port, srv.User).
		set("identity_file", srv.ClientKey).
		set("host_key", "strict")
	e.writeConf()
	r := dropship(t, "hostkey", "-c", e.cfg, "-target", "sshd")
	if r.code != 0 || strings.TrimSpace(r.stdout) != srv.HostKeyFingerprint {
		t.Errorf("hostkey: want %s on stdout\n%s", srv.HostKeyFingerprint, r)
	}
	if !strings.Contains(r.stderr, `host_key = "`+srv.HostKeyFingerprint+`"`) {
		t.Errorf("hostkey does not show how to pin the key\n%s", r)
	}
}
