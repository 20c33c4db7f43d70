package transfer

import (
	"strings"
	"testing"
)

// Every diagnostic catalogued in OPENSSH.md §2.3, §3 and §11, as the client
// prints it (after the tokenizer stripped the line ends).
func TestClassifyOpenSSHMessages(t *testing.T) {
	cases := []struct {
		name  string
		lines []string
		exit  int
		want  Class
	}{
		{"refused", []string{"ssh: connect to host 127.0.0.1 port 2290: Connection refused", "scp: Connection closed"}, 255, ClassConnectRefused},
		{"refused legacy", []string{"ssh: connect to host 127.0.0.1 port 2290: Connection refused", "lost connection"}, 1, ClassConnectRefused},
		{"connect timeout", []string{"ssh: connect to host 127.0.0.1 port 2291: Connection timed out", "scp: Connection closed"}, 255, ClassConnectTimeout},
		{"banner timeout", []string{"Connection timed out during banner exchange", "Connection to 127.0.0.1 port 2292 timed out", "scp: Connection closed"}, 255, ClassConnectBanner},
		{"nxdomain", []string{"ssh: Could not resolve hostname no-such-host.invalid: Name or service not known", "scp: Connection closed"}, 255, ClassConnectDNS},
		{"dns temporary", []string{"ssh: Could not resolve hostname no-such-host.invalid: Temporary failure in name resolution"}, 255, ClassConnectDNS},
		{"closed before banner", []string{"kex_exchange_identification: Connection closed by remote host", "Connection closed by 127.0.0.1 port 2293", "scp: Connection closed"}, 255, ClassConnectBanner},
		{"reset before banner", []string{"kex_exchange_identification: read: Connection reset by peer", "Connection reset by 127.0.0.1 port 2295"}, 255, ClassConnectBanner},
		{"reset unknown port", []string{"Connection reset by UNKNOWN port -1"}, 255, ClassConnectBanner},
		{"host key strict unknown", []string{"No ED25519 host key is known for [127.0.0.1]:2299 and you have requested strict checking.", "Host key verification failed.", "scp: Connection closed"}, 255, ClassHostKeyUnknown},
		{"host key refused", []string{"Host key verification failed.", "scp: Connection closed"}, 255, ClassHostKeyUnknown},
		{"host key changed", []string{
			"@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
			"@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
			"@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
			"IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
			"The fingerprint for the ED25519 key sent by the remote host is",
			"SHA256:ifzbkyU5VhctKyEy0nh5TwM0J8m0n+M15PCDRj1jTuc.",
			"Host key for [127.0.0.1]:2299 has changed and you have requested strict checking.",
			"Host key verification failed.",
			"scp: Connection closed"}, 255, ClassHostKeyChanged},
		{"auth", []string{"scptest@127.0.0.1: Permission denied (publickey,password).", "scp: Connection closed"}, 255, ClassAuth},
		{"auth kbd-int", []string{"scptest@127.0.0.1: Permission denied (keyboard-interactive).", "Connection closed"}, 255, ClassAuth},
		{"auth retry line", []string{"Permission denied, please try again."}, 255, ClassAuth},
		{"too many auth", []string{"Received disconnect from 127.0.0.1 port 2299:2: Too many authentication failures", "Disconnected from 127.0.0.1 port 2299"}, 255, ClassAuth},
		{"no sftp subsystem", []string{"subsystem request failed on channel 0", "scp: Connection closed"}, 255, ClassRemoteConfig},
		{"noisy shell", []string{"scp: Received message too long 1466264675", "scp: Ensure the remote shell produces no output for non-interactive sessions."}, 255, ClassRemoteConfig},
		{"dest dir missing", []string{`scp: dest open "/nonexistent/dir/": No such file or directory`, "scp: failed to upload file data/small.txt to /nonexistent/dir/"}, 1, ClassRemotePath},
		{"dest dir missing legacy", []string{"scp: /nonexistent/dir/: No such file or directory"}, 1, ClassRemotePath},
		{"dest not writable", []string{`scp: dest open "/srv/lab/ro/small.txt": Permission denied`, "scp: failed to upload file data/small.txt to /srv/lab/ro/"}, 1, ClassRemotePermission},
		{"dest not writable legacy", []string{"scp: /srv/lab/ro//small.txt: Permission denied"}, 1, ClassRemotePermission},
		{"disk full", []string{`scp: write remote "/srv/lab/smallfs/big2m.bin": Failure`, "scp: failed to upload file big2m.bin to /srv/lab/smallfs/"}, 1, ClassRemoteFull},
		{"disk full legacy", []string{"scp: /srv/lab/smallfs//big2m.bin: No space left on device"}, 1, ClassRemoteFull},
		{"local missing", []string{`scp: stat local "/tmp/nonexist.txt": No such file or directory`}, 255, ClassLocalFile},
		{"local not regular", []string{`scp: local "/srv/lab/data" is not a regular file`, "scp: failed to upload file /srv/lab/data to /tmp/"}, 1, ClassLocalFile},
		{"mkdir missing parent", []string{"scp: realpath /srv/lab/up/missing/newname: No such file", `scp: upload "/srv/lab/up/missing/newname": path canonicalization failed`}, 1, ClassRemotePath},
		{"server sigterm", []string{"Connection to 127.0.0.1 closed by remote host.", "lost connection"}, 1, ClassLostConnection},
		{"server process killed", []string{"lost connection"}, 1, ClassLostConnection},
		{"server frozen", []string{"Timeout, server 127.0.0.1 not responding.", "scp: Couldn't send packet: Connection reset by peer"}, 255, ClassLostConnection},
		{"broken pipe", []string{"client_loop: send disconnect: Broken pipe"}, 255, ClassLostConnection},
		{"reset mid-way", []string{"Read from remote host 10.0.0.1: Connection reset by peer"}, 255, ClassLostConnection},
		{"sftp dest open missing", []string{`dest open "/nonexistent/x.part": No such file or directory`}, 1, ClassRemotePath},
		{"sftp dest open denied", []string{`dest open "/srv/lab/ro/x.part": Permission denied`}, 1, ClassRemotePermission},
		{"sftp local missing", []string{"stat /tmp/nonexistent-local.txt: No such file or directory"}, 1, ClassLocalFile},
		{"sftp local glob miss", []string{`File "/tmp/gone.txt" not found.`}, 1, ClassLocalFile},
		{"sftp disk full", []string{`write remote "/srv/lab/smallfs/big.part": Failure`}, 1, ClassRemoteFull},
		{"sftp cd missing", []string{"stat remote: No such file or directory"}, 1, ClassRemotePath},
		{"sftp cd denied", []string{"stat remote: Permission denied"}, 1, ClassRemotePermission},
		{"sftp cd realpath", []string{"realpath /nonexistent/dir: No such file"}, 1, ClassRemotePath},
		{"sftp rename missing", []string{`remote rename "/srv/lab/up/missing.part" to "/srv/lab/up/x": No such file or directory`}, 1, ClassRemotePath},
		{"sftp rename denied", []string{`remote rename "/srv/lab/up/final.txt" to "/srv/lab/ro/final.txt": Permission denied`}, 1, ClassRemotePermission},
		{"sftp lost", []string{"Connection closed"}, 255, ClassLostConnection},
		{"nothing recognizable", []string{"something odd"}, 3, ClassUnknown},
		{"no output", nil, 1, ClassUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := classify(c.lines, c.exit)
			if e.Class != c.want {
				t.Fatalf("class = %s, want %s (message %q)", e.Class, c.want, e.Message)
			}
			if e.ExitCode != c.exit {
				t.Errorf("exit code = %d, want %d", e.ExitCode, c.exit)
			}
			if e.Message == "" {
				t.Error("empty message")
			}
		})
	}
}

func TestEveryClassIsDescribed(t *testing.T) {
	for _, c := range Classes() {
		if c == "" || strings.ToLower(string(c)) != string(c) {
			t.Errorf("class %q: not a lowercase token", c)
		}
	}
	// The decisions the agent relies on.
	for _, c := range []Class{ClassAuth, ClassHostKeyUnknown, ClassHostKeyChanged, ClassHostKeyMismatch, ClassRemotePath, ClassRemotePermission, ClassPrompt, ClassBadName} {
		if c.Retryable() {
			t.Errorf("%s must not be retryable", c)
		}
	}
	for _, c := range []Class{ClassConnectRefused, ClassConnectTimeout, ClassConnectBanner, ClassStalled, ClassLostConnection, ClassRemoteFull, ClassLocalFile, ClassUnknown} {
		if !c.Retryable() {
			t.Errorf("%s must be retryable", c)
		}
	}
	for _, c := range []Class{ClassHostKeyUnknown, ClassHostKeyChanged, ClassHostKeyMismatch} {
		if !c.Security() || !c.TargetWide() {
			t.Errorf("%s must be a target-wide security failure", c)
		}
	}
}

func FuzzClassify(f *testing.F) {
	f.Add("scptest@127.0.0.1: Permission denied (publickey,password).", 255)
	f.Add(`dest open "/x": Permission denied`, 1)
	f.Add("Host key verification failed.", 255)
	f.Fuzz(func(t *testing.T, text string, exit int) {
		e := classify(strings.Split(text, "\n"), exit)
		if e == nil || e.Class == "" {
			t.Fatal("no class")
		}
		if _, ok := classes[e.Class]; !ok {
			t.Fatalf("undeclared class %q", e.Class)
		}
	})
}
