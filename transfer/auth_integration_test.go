package transfer

import (
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/internal/sftpd"
	"github.com/dropship/dropship/internal/sshdtest"
)

// Authentication through the pty against real servers (issue 3 point 1).

func TestPassphraseRealSSHD(t *testing.T) {
	t.Parallel()
	srv, tg := startSSHD(t, sshdtest.Options{})
	tg.Identity = srv.EncryptedClientKey
	tg.Passphrase = NewSecret([]byte(srv.EncryptedKeyPassphrase))
	for _, shared := range []bool{false, true} {
		opts := Options{Atomic: true}
		if shared {
			opts.ControlDir = controlDir(t)
		}
		items, _ := oneFile(t, "pp")
		wantDelivered(t, items, upload(t, newClient(t, tg, opts), items, Observer{}))
	}
	logins := acceptedLogins(srv)
	if logins != 2 {
		t.Errorf("sshd accepted %d logins, want 2", logins)
	}

	// A wrong passphrase: dropship answers the prompt once. ssh, limited to
	// one prompt (NumberOfPasswordPrompts=1), gives up the key and the
	// attempt ends at once as an auth failure. (A second prompt, were ssh
	// to ask again, is refused by the engine: see prompt_test.go.)
	tg.Passphrase = NewSecret([]byte("wr0ng-Kx9q-Zt"))
	for _, shared := range []bool{false, true} {
		opts := Options{Atomic: true}
		if shared {
			opts.ControlDir = controlDir(t)
		}
		rec := &recorder{}
		opts.OnConnectionLine = rec.connectionLine
		items, remote := oneFile(t, "pp-wrong")
		start := time.Now()
		res := upload(t, newClient(t, tg, opts), items, rec.observer())
		e := wantClass(t, res[0].Err, ClassAuth, "Permission denied (publickey)")
		if e.Class.Retryable() {
			t.Error("a refused passphrase must not be retried")
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the attempt took %s", d)
		}
		// The prompt was shown and answered exactly once: an answered
		// prompt becomes an output line (the answer is not echoed).
		if n := strings.Count(rec.text(), "Enter passphrase for key '"+srv.EncryptedClientKey+"': \n"); n != 1 {
			t.Errorf("the passphrase prompt was answered %d times:\n%s", n, rec.text())
		}
		wantNothingSent(t, remote)
	}
	if n := acceptedLogins(srv) - logins; n != 0 {
		t.Errorf("sshd accepted %d logins with a wrong passphrase", n)
	}
}

// kbdAccount is a keyboard-interactive account: a two-line instruction and a
// password question.
func kbdAccount(questions ...sftpd.Question) sftpd.Account {
	if len(questions) == 0 {
		questions = []sftpd.Question{{Prompt: "Password: ", Answer: testPassword}}
	}
	return sftpd.Account{KeyboardInteractive: &sftpd.KeyboardInteractive{
		Name:        "dropship test",
		Instruction: "Access to this system is monitored.\nUse your directory password.",
		Questions:   questions,
	}}
}

func TestPasswordAndKeyboardInteractive(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		account  sftpd.Account
		password string
		class    Class    // "" for success
		quotes   []string // the error message quotes these
		method   string   // the auth method counted by the server
	}{
		{"password", sftpd.Account{Password: testPassword}, testPassword, "", nil, "password"},
		{"password wrong", sftpd.Account{Password: testPassword}, "wr0ng-Zq7x", ClassAuth, []string{"Permission denied (password)"}, "password"},
		{"kbd-int", kbdAccount(), testPassword, "", nil, "keyboard-interactive"},
		{"kbd-int wrong", kbdAccount(), "wr0ng-Zq7x", ClassAuth, nil, "keyboard-interactive"},
		{"kbd-int custom question", kbdAccount(sftpd.Question{Prompt: "Verification code: ", Answer: "123456"}), testPassword, ClassPrompt, []string{"Verification code:"}, "keyboard-interactive"},
		{"kbd-int password then code", kbdAccount(sftpd.Question{Prompt: "Password: ", Answer: testPassword}, sftpd.Question{Prompt: "Verification code: ", Answer: "123456"}), testPassword, ClassPrompt, []string{"Verification code:"}, "keyboard-interactive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, shared := range []bool{false, true} {
				srv, tg := startSFTPD(t, c.account, sftpd.Config{})
				tg.Password = NewSecret([]byte(c.password))
				rec := &recorder{}
				opts := Options{Atomic: true, OnConnectionLine: rec.connectionLine}
				if shared {
					opts.ControlDir = controlDir(t)
				}
				items, remote := oneFile(t, "pw")
				res := upload(t, newClient(t, tg, opts), items, rec.observer())
				if c.class == "" {
					wantDelivered(t, items, res)
				} else {
					e := wantClass(t, res[0].Err, c.class, c.quotes...)
					if e.Class.Retryable() {
						t.Errorf("%s must not be retried", e.Class)
					}
					wantNothingSent(t, remote)
				}
				st := srv.Stats()
				switch {
				case c.class == ClassPrompt:
					// Killed while the server waits for the answers:
					// the server counts that attempt or not, depending
					// on when it sees the connection close.
					if st.AuthAttempts[c.method] > 1 || st.Logins != 0 {
						t.Errorf("shared=%v: server counted auth attempts %v and %d logins, want at most one %s and none", shared, st.AuthAttempts, st.Logins, c.method)
					}
				case st.AuthAttempts[c.method] != 1 || len(st.AuthAttempts) != 1:
					t.Errorf("shared=%v: server counted auth attempts %v, want exactly one %s", shared, st.AuthAttempts, c.method)
				}
				if rec.contains(c.password) || rec.contains(testPassword) {
					t.Errorf("a password was published:\n%s", rec.text())
				}
				if t.Failed() {
					t.Logf("shared=%v output:\n%s", shared, rec.text())
					return
				}
			}
		})
	}
}
