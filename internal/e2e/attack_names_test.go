package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/events"
	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// promptNames are file names (a "/" makes folders) that mimic what the
// OpenSSH client prints: its prompts, its errors and its batch commands,
// with control characters, shell syntax and option-like leading dashes.
// {user} and {key} are replaced by the login and the identity file.
var promptNames = []string{
	"report (password:",
	"q'password:",
	"x's password: ",
	"{user}@127.0.0.1's password: ",
	"Password:",
	"password: ",
	"(user@host) Password: ",
	"({user}@127.0.0.1) Password: ",
	"Verification code: ",
	"Enter passphrase for key '/k': ",
	"Enter passphrase for key '{key}': ",
	"Enter passphrase for \"k\": ",
	"Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
	"Are you sure you want to continue connecting (yes/no)? ",
	"Please type 'yes', 'no' or the fingerprint: ",
	"yes",
	"no",
	"Permission denied (publickey,password).",
	"Permission denied, please try again.",
	"Received disconnect from 127.0.0.1 port 22:2: Too many authentication failures",
	"Host key verification failed.",
	"@@@@@@@@@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@@@@@@@@@",
	"Connection closed by 127.0.0.1 port 22",
	"Connection refused",
	"No space left on device",
	"Couldn't write to remote file",
	"client_loop: send disconnect: Broken pipe",
	"subsystem request failed on channel 0",
	"cr\rPassword: ",
	"crlf\r\nPassword: ",
	"lf\nx's password: ",
	"esc\x1b[2K\rPassword: ",
	"\x1b[1A\x1b[2Kroot@127.0.0.1's password: ",
	"osc\x1b]0;pwned\x07title",
	"bell\a and bs\b\b\bPassword: ",
	"del\x7f.txt",
	"tab\tpassword:\t",
	"line\u2028separator password: ",
	"latin1 \xe9\xff bytes password: ",
	"-rf",
	"--help",
	"-b batch",
	"-",
	"-oProxyCommand=touch pwned-proxy",
	"$(touch pwned)",
	"`touch pwned-backtick`",
	"'; touch pwned-quote; '",
	"\"; touch pwned-dquote; \"",
	"a b  c",
	" leading space",
	"trailing space ",
	"!touch pwned-bang",
	"put x y",
	"get /etc/passwd",
	"rename a b",
	"lcd /",
	"progress",
	"bye",
	"#comment",
	"%s%n%x%p.txt",
	"back\\slash\\",
	"glob*?[!a].txt",
	"~tilde",
	"sftp> put -P x",
}

// hasControl reports whether s holds a control character: such a name may be
// refused with class bad-name instead of being sent.
func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0x85 || r == 0x2028 || r == 0x2029 {
			return true
		}
	}
	return false
}

// TestAttackPromptNames drops files whose names mimic every prompt (and
// every failure message) OpenSSH prints, with control characters, shell
// syntax and leading dashes, once to a real sshd with a key login (no
// password configured) and once to the built-in server with a password
// login. Every file arrives byte-identical under exactly its name, or (only
// for a name with a control character) is refused with a failed event of
// class bad-name of its own; no other failure happens (the target is never
// held or failed as auth); the password, not even any 4 bytes of it,
// appears in any published event or in the agent's output; nothing runs.
func TestAttackPromptNames(t *testing.T) {
	forEachAgentUser(t, func(t *testing.T, u *agentUser) {
		t.Run("key-sshd", func(t *testing.T) {
			t.Parallel()
			testAttackPromptNames(t, u, false)
		})
		t.Run("password-sftpd", func(t *testing.T) {
			t.Parallel()
			testAttackPromptNames(t, u, true)
		})
	})
}

func testAttackPromptNames(t *testing.T, u *agentUser, password bool) {
	rnd := &lockedRand{r: newRand(t)}
	e := newAttackEnv(t, u)
	n := e.externalNATS()
	// Every 4 bytes of it hold an upper-case letter that is not a hex digit
	// or a symbol, so no sha256, id or English word can hold them by chance.
	const secret = "Q#7vZ%k2W^m9X~p4J&r8"
	login, keyPath := "", ""
	var srv *sftpd.Server
	if password {
		login = "alice"
		var err error
		srv, err = sftpd.New(sftpd.Config{
			Listen: "127.0.0.1:0",
			Home:   e.remote,
			Users:  map[string]sftpd.Account{login: {Password: secret}},
		})
		if err != nil {
			t.Fatalf("start sftpd: %v", err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		e.sftpdPasswordTarget("partner", srv.Port(), srv.HostKeyFingerprint(), login, secret, e.remote)
		keyPath = filepath.Join(e.dir, "partner.key")
	} else {
		sshd := sshdtest.Start(t, sshdtest.Options{})
		login = sshd.User
		e.sshdKeyTarget("partner", sshd, e.remote)
		keyPath = filepath.Join(e.dir, "partner.key")
	}
	e.watchFolder(e.watch, "partner")
	e.writeConf()

	type file struct {
		name string // relative path in the watch folder
		data []byte
	}
	var files []file
	for i, pat := range promptNames {
		name := strings.NewReplacer("{user}", login, "{key}", keyPath).Replace(pat)
		name = strings.TrimPrefix(name, "/")
		for j := range len(secret) - 3 {
			if strings.Contains(name, secret[j:j+4]) {
				t.Fatalf("test bug: name %q holds part of the password", name)
			}
		}
		size := rnd.intN(4 << 10)
		if i%10 == 3 {
			size = 1<<20 + rnd.intN(1<<20) // long enough for a progress meter showing the name
		}
		data := append([]byte(fmt.Sprintf("%q\n", name)), rnd.bytes(size)...)
		// Each name twice (the second in a folder), for two chances
		// to hit the moment a prompt detector looks at the output.
		files = append(files, file{name, data}, file{filepath.Join("again", name), append([]byte("again "), data...)})
	}
	// A shell on the remote side would run these in the login folder, the
	// agent's folder or the remote folder.
	home, _ := os.UserHomeDir()
	pwnedDirs := []string{home, e.dir, e.remote, e.watch, "/"}
	pwned := func() []string {
		var found []string
		for _, d := range pwnedDirs {
			for _, n := range names(d) {
				if strings.HasPrefix(n, "pwned") {
					found = append(found, filepath.Join(d, n))
				}
			}
		}
		return found
	}
	if p := pwned(); len(p) > 0 {
		t.Fatalf("%q exist before the test", p)
	}

	c := collect(t, n.url())
	tr := track(t, n.url())
	agent := e.startAgent()
	for _, f := range files {
		p := filepath.Join(e.watch, f.name)
		if d := filepath.Dir(p); d != e.watch {
			e.mkdirOwned(d)
		}
		writeFile(t, p, f.data)
	}

	delivered := func(f file) bool { return sameContent(filepath.Join(e.remote, f.name), f.data) }
	refused := func(f file) bool {
		for _, ev := range tr.of(filepath.Join(e.watch, f.name)) {
			if ev.state == events.TransferFailed && ev.class() == "bad-name" {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var missing []file
		for _, f := range files {
			if !delivered(f) && !(hasControl(f.name) && refused(f)) {
				missing = append(missing, f)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, f := range missing {
				t.Errorf("%q was neither delivered byte-identical nor refused as bad-name: events %s", f.name, states(tr.of(filepath.Join(e.watch, f.name))))
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tr.quiet(time.Second, 10*time.Second)
	agent.stop(15 * time.Second)

	// No failure but bad-name, for a name with a control character.
	for p, evs := range tr.all() {
		for _, ev := range evs {
			if ev.data.Error == nil {
				continue
			}
			switch {
			case ev.class() == "auth":
				t.Errorf("the target was failed as auth because of the file %q: %s", p, states(evs))
			case ev.class() == "bad-name" && hasControl(p):
			case ev.class() == "bad-name":
				t.Errorf("%q was refused as bad-name, but it has no control character and the server can hold it: %s", p, states(evs))
			default:
				t.Errorf("%q: a %s event of class %q: %s", p, ev.state, ev.class(), states(evs))
			}
		}
	}
	// A file refused must not be on the remote, nor half of it.
	for _, f := range files {
		if refused(f) && exists(filepath.Join(e.remote, f.name)) {
			t.Errorf("%q was refused as bad-name and is on the remote all the same", f.name)
		}
	}
	want := map[string]bool{}
	for _, f := range files {
		want[filepath.Join(e.remote, f.name)] = true
	}
	_ = filepath.WalkDir(e.remote, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !want[p] {
			t.Errorf("the remote holds %q, which no file of the test should have made", p)
		}
		return nil
	})
	if p := pwned(); len(p) > 0 {
		t.Errorf("a file name was run as a command: %q exist", p)
	}
	if srv != nil {
		if st := srv.Stats(); st.AuthFailures["password"] > 0 || st.AuthFailures["keyboard-interactive"] > 0 {
			t.Errorf("sftpd saw failed logins %v: something other than the password was typed at a password prompt", st.AuthFailures)
		}
	}

	// The password, or any 4 bytes of it.
	if password {
		var leaks []string
		look := func(where, s string) {
			for j := range len(secret) - 3 {
				if i := strings.Index(s, secret[j:j+4]); i >= 0 {
					leaks = append(leaks, fmt.Sprintf("%s holds %q of the password: …%q…", where, secret[j:j+4], s[max(0, i-60):min(len(s), i+64)]))
					return
				}
			}
		}
		for _, m := range c.all() {
			look("an event on "+m.subject, string(m.raw))
			// JSON escapes some bytes (\u0026 for &): decode the data too.
			look("the decoded data of an event on "+m.subject, jsonStrings(m.ev.Data))
		}
		look("the agent's output", agent.logs())
		for i, l := range leaks {
			if i == 20 {
				t.Errorf("… and %d more", len(leaks)-20)
				break
			}
			t.Error("PASSWORD LEAKED: " + l)
		}
	}
	if len(c.ofType(events.TypeTransferCompleted)) == 0 {
		t.Error("no completed event at all")
	}
}
