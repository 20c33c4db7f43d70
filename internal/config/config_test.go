package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dropship/dropship/transfer"
)

// A test document marks each problem it expects on the line where it must
// be reported, with a comment "#! KEY: MESSAGE-PART"; several markers may
// share a line. checkProblems asserts that err reports exactly those
// problems: same line, same key, a message containing MESSAGE-PART.

type wantProblem struct {
	line     int
	key, msg string
}

func markers(src string) []wantProblem {
	var want []wantProblem
	for i, line := range strings.Split(src, "\n") {
		parts := strings.Split(line, "#!")
		for _, p := range parts[1:] {
			key, msg, _ := strings.Cut(strings.TrimSpace(p), ": ")
			want = append(want, wantProblem{line: i + 1, key: strings.TrimSuffix(key, ":"), msg: msg})
		}
	}
	return want
}

func checkProblems(t *testing.T, file, src string, err error) {
	t.Helper()
	want := markers(src)
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected error:\n%v", err)
		}
		return
	}
	var probs Problems
	if !errors.As(err, &probs) {
		t.Fatalf("error is %T, not Problems: %v", err, err)
	}
	if !slices.IsSortedFunc(probs, func(a, b Problem) int { return a.Line - b.Line }) {
		t.Errorf("problems are not sorted by line:\n%v", probs)
	}
	got := slices.Clone(probs)
	for _, w := range want {
		i := slices.IndexFunc(got, func(p Problem) bool {
			return p.Line == w.line && p.Key == w.key && strings.Contains(p.Message, w.msg)
		})
		if i < 0 {
			t.Errorf("missing problem  %s:%d: %s: …%s…", file, w.line, w.key, w.msg)
			continue
		}
		if got[i].File != file {
			t.Errorf("problem names file %q, want %q", got[i].File, file)
		}
		got = slices.Delete(got, i, i+1)
	}
	for _, p := range got {
		t.Errorf("unexpected problem %s", p)
	}
	if t.Failed() {
		t.Logf("all problems:\n%v", err)
	}
}

// parseCase parses src as /etc/dropship/agent.toml and checks its markers.
func parseCase(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse(strings.NewReader(src), "/etc/dropship/agent.toml")
	checkProblems(t, "/etc/dropship/agent.toml", src, err)
	if err == nil && cfg == nil {
		t.Fatal("Parse returned neither a config nor an error")
	}
	if err != nil && cfg != nil {
		t.Fatal("Parse returned a config with its error")
	}
	return cfg
}

const target = `
[[target]]
name = "acme"
host = "sftp.acme.example"
user = "upload"
`

func TestParseProblems(t *testing.T) {
	for _, tc := range []struct{ name, src string }{
		{"syntax error", `
[agent]
log_level = info #! : syntax error
`},
		{"agent values", `
[agent]
name = "edge.01" #! agent.name: must not contain "."
state_dir = ""   #! agent.state_dir: must not be empty
log_level = "verbose" #! agent.log_level: "verbose" is not one of debug, info, warn, error
log_format = "yaml" #! agent.log_format: not one of text, json
metrics_listen = "9469" #! agent.metrics_listen: not host:port
shutdown_grace = "-1s" #! agent.shutdown_grace: must not be negative
`},
		{"agent name with space", `
[agent]
name = "edge 01" #! agent.name: whitespace
`},
		{"agent name empty", `
[agent]
name = "" #! agent.name: must not be empty
`},
		{"home not expanded", `
[agent]
state_dir = "~/dropship" #! agent.state_dir: "~" is not expanded
`},
		{"every wrong type is reported", `
[agent]
name = 1              #! agent.name: must be a string, not an integer
log_level = true      #! agent.log_level: must be a string, not a boolean
shutdown_grace = 30   #! agent.shutdown_grace: must be a duration string such as "30s", not an integer
[nats]
publish_logs = "yes"  #! nats.publish_logs: must be true or false, not a string
auto_create_stream = 1979-05-27 #! nats.auto_create_stream: not a date-time
`},
		{"bad duration", `
[agent]
shutdown_grace = "30 seconds" #! agent.shutdown_grace: "30 seconds" is not a duration; write it like "45s"
`},
		{"unknown keys and tables", `
[agent]
nmae = "x"   #! agent.nmae: unknown key; did you mean name?
user = "x"   #! agent.user: unknown key; user belongs in [nats] or [[target]]
zzz = 1      #! agent.zzz: unknown key
[agnet]      #! agnet: unknown table; did you mean agent?
[agent.sub]  #! agent.sub: unknown table
[[targets]]  #! targets: unknown table; did you mean target?
`},
		{"unknown top-level key", `
name = "x" #! name: unknown key; name belongs in [agent] or [[target]]
"odd key" = 1 #! "odd key": unknown key
`},
		{"agent must be a table", `
[[agent]] #! agent: must be a single table: write [agent], not [[agent]]
name = "x"
`},
		{"target must be an array", `
[target] #! target: must be an array of tables: write [[target]], not [target]
name = "x"
`},
		{"watch of wrong type", `
watch = "x" #! watch: must be an array of tables, not a string
`},
		{"nats values", `
[nats]
url = "http://127.0.0.1:4222" #! nats.url: the scheme must be nats://, tls://, ws:// or wss://
embedded_listen = "127.0.0.1:99999" #! nats.embedded_listen: the port must be a number from 0 to 65535
subject_prefix = "a..b" #! nats.subject_prefix: empty token
credentials_file = "credential:a/b" #! nats.credentials_file: must be a plain file name, without "/"
stream = "DROPSHIP.EVENTS" #! nats.stream: not a valid JetStream stream name
`},
		{"stream replicas", `
[nats]
stream_replicas = 7 #! nats.stream_replicas: must be between 1 and 5, not 7
`},
		{"stream replicas on the embedded server", `
[nats]
stream_replicas = 3 #! nats.stream_replicas: 3 replicas need a NATS cluster, and the embedded server is one server: set nats.url
`},
		{"nats url with credentials", `
[nats]
url = "nats://127.0.0.1:4222, nats://user:secret@127.0.0.1:4223" #! nats.url: must not hold credentials
`},
		{"nats url list with a hole", `
[nats]
url = "nats://127.0.0.1:4222,,nats://127.0.0.1:4223" #! nats.url: has an empty URL
`},
		{"subject prefix wildcard", `
[nats]
subject_prefix = "a.>" #! nats.subject_prefix: "a.>": a token ">" must not contain ".", "*" or ">"
`},
		{"credential without name", `
[nats]
credentials_file = "credential:" #! nats.credentials_file: credential: needs a name
`},
		{"target required keys", `
[[target]] #! target.name: missing; every [[target]] needs one #! target.host: missing #! target.user: missing
port = 22
`},
		{"target empty required keys", `
[[target]]
name = "" #! target.name: must not be empty
host = "" #! target.host: must not be empty
user = "" #! target.user: must not be empty
`},
		{"target values", `
[[target]]
name = "ctl"  #! target.name: "ctl" is reserved
host = "sftp.example:2222" #! target.host: give the port in port
user = "-oProxyCommand=x" #! target.user: must not start with "-"
port = 0 #! target.port: must be between 1 and 65535, not 0
connections = 65 #! target.connections: must be between 1 and 64, not 65
retry_max = 0 #! target.retry_max: must be at least 1, not 0
connect_timeout = "0s" #! target.connect_timeout: must be more than 0
stall_timeout = "-1m" #! target.stall_timeout: must be more than 0
remote_dir = "in\ncoming" #! target.remote_dir: must not contain a newline or NUL
known_hosts_file = "credential:kh" #! target.known_hosts_file: cannot be a credential
passphrase_file = "key.pass" #! target.passphrase_file: is only used to unlock identity_file
`},
		{"target name agent is reserved", `
[[target]]
name = "agent" #! target.name: "agent" is reserved
host = "h"
user = "u"
`},
		{"target port of wrong type", `
[[target]]
name = "a"
host = "h"
user = "u"
port = 22.0 #! target.port: must be an integer, not a float
`},
		{"host forms", `
[[target]]
name = "a"
host = "upload@sftp.example" #! target.host: give the user in user
user = "u"
[[target]]
name = "b"
host = "sftp://sftp.example" #! target.host: is a URL
user = "u"
[[target]]
name = "c"
host = "-oProxyCommand=sh" #! target.host: must not start with "-"
user = "u"
[[target]]
name = "d"
host = "[sftp.example]" #! target.host: is not an IP address in brackets
user = "u"
[[target]]
name = "e"
host = "sftp example" #! target.host: is not a host name or IP address
user = "u"
`},
		{"duplicate target", target + `
[[target]]
name = "acme" #! target.name: duplicate target name "acme"; the [[target]] at line 2 has it already
host = "h"
user = "u"
`},
		{"retry backoff max below backoff", target + `
retry_backoff = "10m"
retry_backoff_max = "1m" #! target.retry_backoff_max: retry_backoff_max (1m0s) must not be less than retry_backoff (10m0s)
`},
		{"retry backoff above default max", target + `
retry_backoff = "10m" #! target.retry_backoff: must not be less than retry_backoff (10m0s)
`},
		{"host keys", `
[[target]]
name = "a"
host = "h"
user = "u"
host_key = "Strict" #! target.host_key: is not "strict", "accept-new" or a pinned "SHA256:..." fingerprint
[[target]]
name = "b"
host = "h"
user = "u"
host_key = "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48" #! target.host_key: MD5 fingerprints are not supported
[[target]]
name = "c"
host = "h"
user = "u"
host_key = "16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48" #! target.host_key: MD5 fingerprints are not supported
[[target]]
name = "d"
host = "h"
user = "u"
host_key = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s." #! target.host_key: remove the trailing "."
[[target]]
name = "e"
host = "h"
user = "u"
host_key = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s=" #! target.host_key: remove the "=" padding
[[target]]
name = "f"
host = "h"
user = "u"
host_key = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZ" #! target.host_key: 43 base64 characters after "SHA256:", this one has 29
[[target]]
name = "g"
host = "h"
user = "u"
host_key = "sha256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s" #! target.host_key: write the prefix as "SHA256:"
[[target]]
name = "h"
host = "h"
user = "u"
host_key = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3t!2s" #! target.host_key: bad base64
`},
		{"ssh options", target + `
ssh_options = [
  "Ciphers=aes128-gcm@openssh.com",
  "port=2222",                     #! target.ssh_options: element 2: Port is set by dropship and cannot be changed in ssh_options: use target.port
  "StrictHostKeyChecking no",      #! target.ssh_options: element 3: StrictHostKeyChecking is set by dropship and cannot be changed in ssh_options: use target.host_key
  "UserKnownHostsFile = /dev/null", #! target.ssh_options: element 4: UserKnownHostsFile is set by dropship and cannot be changed in ssh_options: use target.known_hosts_file
  "IdentityFile=~/.ssh/id",        #! target.ssh_options: element 5: IdentityFile is set by dropship and cannot be changed in ssh_options: use target.identity_file
  "ConnectTimeout=5",              #! target.ssh_options: element 6: ConnectTimeout is set by dropship and cannot be changed in ssh_options: use target.connect_timeout
  "Compression",                   #! target.ssh_options: element 7: "Compression" has no value
  "-oCompression=yes",             #! target.ssh_options: element 8: "-oCompression=yes" is not an ssh option
  "Compression=yes\nProxyCommand=sh", #! target.ssh_options: element 9: must not contain a newline
  7,                               #! target.ssh_options: element 10 must be a string, not an integer
]
`},
		{"ssh options not an array", target + `
ssh_options = "Ciphers=aes128-gcm@openssh.com" #! target.ssh_options: must be an array of strings, not a string
`},
		{"unknown target key", target + `
hots = "x" #! target.hots: unknown key; did you mean host?
password = "hunter2" #! target.password: unknown key; did you mean password_file?
`},
		{"watch required keys", `
[[watch]] #! watch.path: missing; every [[watch]] needs one #! watch.target: missing
`},
		{"watch without targets", `
[[watch]]
path = "/srv/drop"
target = "acme" #! watch.target: no [[target]] named "acme": no target is defined
`},
		{"watch target typo", target + `
[[watch]]
path = "/srv/drop"
target = "acm" #! watch.target: no [[target]] named "acm"; did you mean acme?
[[watch]]
path = "/srv/drop2"
target = "zzzzz" #! watch.target: no [[target]] named "zzzzz" (targets: acme)
`},
		{"stream sizes", `
[nats]
stream_max_bytes = "lots" #! nats.stream_max_bytes: "lots" is not a size
duplicate_window = "30s" #! nats.duplicate_window: 30s is shorter than JetStream's default of 2m
stream_max_age = "7d" #! nats.stream_max_age: "7d" is not a duration
`},
		{"routes", target + `
[[target]]
name = "backup"
host = "b.example"
user = "u"
[[watch]]
path = "/srv/drop"
targets = ["acme", "backup"]
[[watch.route]]
target = "nobody" #! watch.route.target: route for target "nobody", which is not one of the watch's targets (acme, backup)
[[watch.route]]
target = "backup"
match = "re:([" #! watch.route.match: not a regular expression
[[watch.route]]
target = "acme"
rename = "../{name}" #! watch.route.rename: leaves the target's remote_dir
[[watch]]
path = "/srv/drop2"
target = "acme"
[[watch.route]]
target = "acme"
rename = "{date:2006}.csv" #! watch.route.rename: gives every file the same name
[[watch]]
path = "/srv/drop3"
target = "acme"
[[watch.route]]
target = "acme"
rename = "/{name}" #! watch.route.rename: an absolute path
[[watch]]
path = "/srv/drop4"
target = "acme"
[[watch.route]]
target = "acme"
rename = "{nmae}" #! watch.route.rename: unknown placeholder {nmae}
`},
		{"fan-out targets", target + `
[[watch]]
path = "/srv/drop"
targets = ["acme", "acm"] #! watch.targets: no [[target]] named "acm"; did you mean acme?
[[watch]]
path = "/srv/drop2"
targets = ["acme", "acme"] #! watch.targets: names target "acme" twice
[[watch]]
path = "/srv/drop3"
targets = [] #! watch.targets: must name at least one target
[[watch]]
path = "/srv/drop4"
target = "acme"
targets = ["acme"] #! watch.targets: set either target (one) or targets (several), not both
`},
		{"watch values", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
include = ["*.csv", "[a-"] #! watch.include: element 2: "[a-" is not a valid pattern
exclude = ["**/tmp", "a**"] #! watch.exclude: element 2: "a**": "**" must be a whole path element
settle = "-2s" #! watch.settle: must not be negative
ready_marker = "/done" #! watch.ready_marker: without "/"
after = "move" #! watch.after: "move" is not one of archive, delete, keep
failed_dir = "/srv/drop" #! watch.failed_dir: must not be the watched folder itself
`},
		{"watch include empty", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
include = [] #! watch.include: must not be empty, or no file would ever be sent
`},
		{"huge integer", target + `
retry_max = 3000000000 #! target.retry_max: must be between 1 and 2147483647
`},
		{"watch include of wrong type", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
include = "*.csv" #! watch.include: must be an array of strings, not a string
`},
		{"archive_dir without archive", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
after = "keep"
archive_dir = "/srv/sent" #! watch.archive_dir: is only used with after = "archive", but after is "keep"
`},
		{"archive_dir is the watched folder", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
archive_dir = "/srv/drop/" #! watch.archive_dir: must not be the watched folder itself
`},
		{"archive_dir would be watched", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
archive_dir = "/srv/drop/sent" #! watch.archive_dir: /srv/drop/sent is inside the watched folder so its files would be sent again
[[watch]]
path = "/srv/other"
target = "acme"
failed_dir = "/srv/drop/failed" #! watch.failed_dir: /srv/drop/failed is inside /srv/drop, watched by the [[watch]] at line 7, so its files would be sent again
[[watch]]
path = "/srv/third"
target = "acme"
after = "delete"
failed_dir = "/srv/other" #! watch.failed_dir: /srv/other is watched by the [[watch]] at line 11
`},
		{"overlapping watches", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
[[watch]]
path = "/srv/drop/sub" #! watch.path: /srv/drop/sub is inside /srv/drop, watched by the [[watch]] at line 7
target = "acme"
[[watch]]
path = "/srv" #! watch.path: /srv contains /srv/drop, watched by the [[watch]] at line 7 #! watch.path: /srv contains /srv/drop/sub
target = "acme"
[[watch]]
path = "/etc/dropship/in"
target = "acme"
[[watch]]
path = "in" #! watch.path: /etc/dropship/in is already watched by the [[watch]] at line 16
target = "acme"
`},
		{"unknown key in inline target", `
target = [
  { name = "a", host = "h", user = "u" },
  { name = "b", host = "h", user = "u", prot = 2 }, #! target.prot: unknown key; did you mean port?
]
`},
	} {
		t.Run(tc.name, func(t *testing.T) { parseCase(t, tc.src) })
	}
}

func TestParseValid(t *testing.T) {
	for _, tc := range []struct{ name, src string }{
		{"empty file", ``},
		{"no watch", target},
		{"only agent", `[agent]
name = "edge-01"`},
		{"pinned host key", target + `host_key = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"`},
		{"hidden archive inside watch", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
archive_dir = "/srv/drop/.sent/today"`},
		{"archive inside a flat watch", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
recursive = false
archive_dir = "/srv/drop/sent"`},
		{"embedded on any port", `[nats]
embedded_listen = "127.0.0.1:0"`},
		{"several NATS URLs", `[nats]
url = "nats://127.0.0.1:4222, tls://[::1]:4223,ws://localhost:8080"`},
		{"allowed ssh options", target + `ssh_options = ["Ciphers=aes128-gcm@openssh.com", "ProxyJump bastion", "compression = yes"]`},
		{"globs", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
include = ["**/*.csv", "a/**", "reports/[0-9]*.pdf", "\\*literal"]
exclude = ["**"]`},
	} {
		t.Run(tc.name, func(t *testing.T) { parseCase(t, tc.src) })
	}
}

func TestParseDefaults(t *testing.T) {
	cfg := parseCase(t, target+`
[[watch]]
path = "drop/acme"
target = "acme"
`)
	def := Default()
	if !reflect.DeepEqual(cfg.Agent, def.Agent) || !reflect.DeepEqual(cfg.NATS, def.NATS) {
		t.Errorf("agent/nats defaults:\n got %+v %+v\nwant %+v %+v", cfg.Agent, cfg.NATS, def.Agent, def.NATS)
	}
	wantTarget := Target{
		Name: "acme", Host: "sftp.acme.example", Port: 22, User: "upload",
		HostKey: "strict", KnownHostsFile: "/var/lib/dropship/known_hosts", RemoteDir: ".",
		Atomic: true, Overwrite: true, Protocol: "auto", Connections: 2, ConnectTimeout: 15 * time.Second, StallTimeout: time.Minute,
		SSHOptions: []string{}, RetryMax: 10, RetryBackoff: 5 * time.Second, RetryBackoffMax: 5 * time.Minute,
		Line: 2,
	}
	if !reflect.DeepEqual(cfg.Targets, []Target{wantTarget}) {
		t.Errorf("target:\n got %+v\nwant %+v", cfg.Targets, []Target{wantTarget})
	}
	wantWatch := Watch{
		Path: "/etc/dropship/drop/acme", Target: "acme", Targets: []string{"acme"}, Recursive: true, Include: []string{"*"},
		Exclude: []string{}, Settle: 2 * time.Second, After: "archive",
		ArchiveDir: "/etc/dropship/drop/acme/.dropship-sent", Line: 7,
	}
	if !reflect.DeepEqual(cfg.Watches, []Watch{wantWatch}) {
		t.Errorf("watch:\n got %+v\nwant %+v", cfg.Watches, []Watch{wantWatch})
	}
	if cfg.File != "/etc/dropship/agent.toml" {
		t.Errorf("File = %q", cfg.File)
	}
}

func TestParseValues(t *testing.T) {
	cfg := parseCase(t, `
[agent]
name = "edge-01"
state_dir = "state"
shutdown_grace = "0s"

[nats]
credentials_file = "credential:nats.creds"

[[target]]
name = "v6"
host = "[::1]"
user = "u"
identity_file = "keys/id_ed25519"
passphrase_file = "credential:passphrase"
password_file = "/etc/dropship/pw"
known_hosts_file = "kh"
ssh_options = ["Ciphers=aes128-gcm@openssh.com"]

[[watch]]
path = "/srv/drop"
target = "v6"
after = "delete"
failed_dir = "failed"
`)
	if cfg == nil {
		return
	}
	if cfg.Agent.StateDir != "/etc/dropship/state" || cfg.Agent.ShutdownGrace != 0 {
		t.Errorf("agent = %+v", cfg.Agent)
	}
	if cfg.NATS.CredentialsFile != "credential:nats.creds" {
		t.Errorf("credentials_file = %q; a credential must be kept as given", cfg.NATS.CredentialsFile)
	}
	tg := cfg.Target("v6")
	if tg == nil {
		t.Fatal(`Target("v6") = nil`)
	}
	if tg.Host != "::1" || tg.IdentityFile != "/etc/dropship/keys/id_ed25519" || tg.PassphraseFile != "credential:passphrase" ||
		tg.PasswordFile != "/etc/dropship/pw" || tg.KnownHostsFile != "/etc/dropship/kh" {
		t.Errorf("target = %+v", tg)
	}
	if cfg.Target("nope") != nil {
		t.Error(`Target("nope") != nil`)
	}
	w := cfg.Watches[0]
	if w.ArchiveDir != "" || w.FailedDir != "/etc/dropship/failed" {
		t.Errorf("watch = %+v", w)
	}
}

func TestDefault(t *testing.T) {
	cfg := Default()
	if cfg.Agent.Name == "" || strings.ContainsAny(cfg.Agent.Name, ".*> ") {
		t.Errorf("default agent name %q is not a subject token", cfg.Agent.Name)
	}
	if cfg.Agent.ShutdownGrace != 30*time.Second || cfg.NATS.EmbeddedListen != "127.0.0.1:4222" || !cfg.NATS.PublishLogs {
		t.Errorf("defaults = %+v", cfg)
	}
	if len(cfg.Targets) != 0 || len(cfg.Watches) != 0 {
		t.Error("Default has targets or watches")
	}
}

func TestProblemString(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{"a.toml", 3, "target.port", "bad"}, "a.toml:3: target.port: bad"},
		{Problem{"a.toml", 0, "target.port", "bad"}, "a.toml: target.port: bad"},
		{Problem{"a.toml", 7, "", "syntax error: x"}, "a.toml:7: syntax error: x"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	ps := Problems{{"f", 1, "a", "x"}, {"f", 2, "b", "y"}}
	if got, want := ps.Error(), "f:1: a: x\nf:2: b: y"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestRefusedSSHOptions(t *testing.T) {
	names := RefusedSSHOptions()
	if want := len(transfer.PinnedOptions()) + len(refusedSSHOptions); len(names) != want {
		t.Errorf("%d refused options, want %d", len(names), want)
	}
	for _, n := range names {
		if err := checkSSHOption(strings.ToLower(n) + "=x"); err == nil {
			t.Errorf("%s is not refused", n)
		}
	}
	names[0] = "changed"
	if RefusedSSHOptions()[0] == "changed" {
		t.Error("RefusedSSHOptions returns the package's own slice")
	}
}

// example reads the shipped agent.toml.example with its example [[target]]
// and [[watch]] uncommented: as shipped they are commented out ("#key = …")
// so that the file passes `dropship check` on any machine.
func example(t *testing.T) string {
	t.Helper()
	return uncomment(shippedExample(t))
}

func shippedExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "agent.toml.example"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var commentedKey = regexp.MustCompile(`(?m)^#(\[\[|[a-z_]+ *= )`)

func uncomment(src string) string { return commentedKey.ReplaceAllString(src, "$1") }

// The file as shipped passes Load (and so `dropship check`) as it is.
func TestExampleAsShippedLoads(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "..", "agent.toml.example"))
	if err != nil {
		t.Fatalf("agent.toml.example as shipped does not pass: %v", err)
	}
	if len(cfg.Targets) != 0 || len(cfg.Watches) != 0 {
		t.Errorf("the shipped example should not send anything: %d targets, %d watches", len(cfg.Targets), len(cfg.Watches))
	}
	if !commentedKey.MatchString(shippedExample(t)) {
		t.Error("no commented-out example [[target]]/[[watch]] keys found")
	}
}

func TestExampleParses(t *testing.T) {
	src := example(t)
	cfg, err := Parse(strings.NewReader(src), "agent.toml.example")
	if err != nil {
		t.Fatalf("agent.toml.example does not parse:\n%v", err)
	}

	// It documents every key, with its default.
	for section, keys := range sectionKeys() {
		for _, k := range keys {
			if k == "route" {
				if !strings.Contains(src, "[[watch.route]]") {
					t.Error("agent.toml.example does not show [[watch.route]]")
				}
				continue // a table of its own, shown as one
			}
			if !strings.Contains(src, "\n"+k+" = ") && !strings.Contains(src, "\n# "+k+" = ") {
				t.Errorf("agent.toml.example does not show %s key %s", section, k)
			}
		}
	}
	def := Default()
	if cfg.Agent != def.Agent || !reflect.DeepEqual(cfg.NATS, def.NATS) {
		t.Errorf("example [agent]/[nats] differ from Default():\n got %+v %+v\nwant %+v %+v", cfg.Agent, cfg.NATS, def.Agent, def.NATS)
	}
	tg := cfg.Targets[0]
	tg.Name, tg.Host, tg.User, tg.RemoteDir, tg.KnownHostsFile, tg.Line = "", "", "", ".", "", 0
	if !reflect.DeepEqual(tg, DefaultTarget()) {
		t.Errorf("example [[target]] has non-default values:\n got %+v\nwant %+v", tg, DefaultTarget())
	}
	w := cfg.Watches[0]
	w.Path, w.Target, w.Targets, w.ArchiveDir, w.Line = "", "", nil, "", 0
	if !reflect.DeepEqual(w, DefaultWatch()) {
		t.Errorf("example [[watch]] has non-default values:\n got %+v\nwant %+v", w, DefaultWatch())
	}
	for _, n := range RefusedSSHOptions() {
		if !strings.Contains(src, n+",") && !strings.Contains(src, n+".") {
			t.Errorf("agent.toml.example does not list the refused ssh option %s", n)
		}
	}
}

func TestExampleLoads(t *testing.T) {
	dir := t.TempDir()
	drop := filepath.Join(dir, "drop")
	if err := os.Mkdir(drop, 0o755); err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(example(t), `path = "/srv/drop/acme"`, `path = "drop"`, 1)
	file := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(file)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if w := cfg.Watches[0]; w.Path != drop || w.ArchiveDir != filepath.Join(drop, ".dropship-sent") {
		t.Errorf("watch = %+v", w)
	}
	if cfg.File != file {
		t.Errorf("File = %q, want %q", cfg.File, file)
	}
}
