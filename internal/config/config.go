package config

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultFile is where dropship looks for its configuration when no -c flag
// is given.
const DefaultFile = "/etc/dropship/agent.toml"

// Config is a parsed, defaulted and validated configuration. It holds file
// references only, never a secret: read secrets with ReadSecret when they
// are needed.
type Config struct {
	File    string // the file it was read from; absolute after Load
	Agent   Agent
	NATS    NATS
	Targets []Target
	Watches []Watch
	Sources []Source
}

// Agent is the [agent] table.
type Agent struct {
	Name          string // a NATS subject token; defaults to the host name with "." replaced by "-"
	StateDir      string
	LogLevel      string // debug, info, warn or error
	LogFormat     string // text or json
	MetricsListen string // host:port, or empty for no metrics endpoint
	ShutdownGrace time.Duration
}

// NATS is the [nats] table.
type NATS struct {
	URL              string // empty: run an embedded nats-server
	EmbeddedListen   string // host:port of the embedded server; port 0 picks a free port
	SubjectPrefix    string
	CredentialsFile  string // a path or credential:NAME; empty for none
	Stream           string
	AutoCreateStream bool
	// StreamReplicas is the replica count of a stream the agent creates
	// (1 to 5; more than 1 needs a JetStream cluster). An existing stream
	// keeps its own.
	StreamReplicas int
	PublishLogs    bool
	// CloudEventsMode is how events are published: "structured" (the whole
	// event as JSON) or "binary" (ce- headers, the data as the payload).
	CloudEventsMode string
	// The size and placement of a stream the agent creates (1 GiB, 7 days
	// and a 24 h duplicate window by default). An existing stream keeps its
	// own.
	StreamMaxBytes  int64
	StreamMaxAge    time.Duration
	DuplicateWindow time.Duration
	StreamCluster   string
	StreamTags      []string
	// The other ways of logging in to an external server, at most one of
	// them (or CredentialsFile): User with PasswordFile, TokenFile, or
	// NKeySeedFile. The files are paths or credential:NAME.
	User         string
	PasswordFile string
	TokenFile    string
	NKeySeedFile string
	// TLS to an external server: the CA of its certificate (empty: the
	// system's), a client certificate and its key (a secret file, a path or
	// credential:NAME), and the name its certificate must carry (empty: the
	// URL's host). Any of them turns TLS on.
	TLSCAFile     string
	TLSCertFile   string
	TLSKeyFile    string
	TLSServerName string
}

// Target is one [[target]]: a remote SSH/SFTP server.
type Target struct {
	Name           string
	Host           string // a host name or an IP address, without brackets
	Port           int
	User           string
	PasswordFile   string // a path or credential:NAME; empty for none
	IdentityFile   string // a path or credential:NAME; empty for none
	PassphraseFile string // a path or credential:NAME; empty for none
	// HostKey is "strict", "accept-new" or a pinned "SHA256:" fingerprint of
	// 43 base64 characters.
	HostKey        string
	KnownHostsFile string // defaults to <state_dir>/known_hosts
	RemoteDir      string // "." is the login directory
	Atomic         bool
	// Overwrite lets a delivery replace a remote file of the same name;
	// false never replaces one (the file fails as remote-exists and waits).
	Overwrite bool
	// Protocol is "auto" (SFTP, or the legacy scp protocol on a connection
	// whose server has no SFTP subsystem), "sftp" (SFTP only) or "scp" (the
	// legacy scp protocol only, for servers without SFTP).
	Protocol string
	// Preserve sets the remote file's mtime and mode after the upload, where
	// the server allows it (a refusal is ignored: delivery never depends on
	// SETSTAT).
	Preserve bool
	// Bandwidth caps the target's upload rate, all its connections
	// together, in bytes per second; 0 is no limit.
	Bandwidth int64
	// Window is when files may start to be sent (daily, local time); the
	// zero Window is always. An upload running when it closes finishes.
	Window          Window
	Connections     int
	ConnectTimeout  time.Duration
	StallTimeout    time.Duration
	SSHOptions      []string // "Key=Value" or "Key Value"; never one of RefusedSSHOptions
	RetryMax        int
	RetryBackoff    time.Duration
	RetryBackoffMax time.Duration
	Line            int // line of its [[target]] header; 0 when not from a file
}

// Watch is one [[watch]]: a drop folder and the target its files go to.
type Watch struct {
	Path   string
	Target string // the Name of a Target: the first of Targets
	// Targets are the targets its files go to (target = "a", or
	// targets = ["a", "b"]: a fan-out); each is sent to independently and
	// `after` runs once every one has the file.
	Targets []string
	// Routes choose, per target, which files go to it and under which
	// name ([[watch.route]]); a target without one gets every file.
	Routes         []Route
	Recursive      bool
	Include        []string // path.Match globs; "**" matches any number of folders
	Exclude        []string
	Settle         time.Duration
	ReadyMarker    string // suffix such as ".done", or empty
	FollowSymlinks bool
	After          string // archive, delete or keep
	ArchiveDir     string // set when After is "archive"; defaults to <path>/.dropship-sent
	FailedDir      string // empty: failed files stay where they are
	// Source is the [[source]] whose spool this is (see SpoolWatch); "" for
	// a configured watch.
	Source string
	Line   int // line of its [[watch]] header; 0 when not from a file
}

// The values After may take.
const (
	AfterArchive = "archive"
	AfterDelete  = "delete"
	AfterKeep    = "keep"
)

// The values HostKey may take besides a pinned fingerprint.
const (
	HostKeyStrict    = "strict"
	HostKeyAcceptNew = "accept-new"
)

// DefaultArchiveDir is the name of the folder, inside a watched folder,
// where sent files are archived when archive_dir is not set.
const DefaultArchiveDir = ".dropship-sent"

// Default returns a configuration with every default and no targets or
// watches.
func Default() *Config {
	return &Config{
		Agent: Agent{
			Name:          defaultAgentName(),
			StateDir:      "/var/lib/dropship",
			LogLevel:      "info",
			LogFormat:     "text",
			ShutdownGrace: 30 * time.Second,
		},
		NATS: NATS{
			EmbeddedListen:  "127.0.0.1:4222",
			SubjectPrefix:   "dropship",
			Stream:          "DROPSHIP_EVENTS",
			StreamReplicas:  1,
			PublishLogs:     true,
			CloudEventsMode: "structured",
			StreamMaxBytes:  1 << 30,
			StreamMaxAge:    7 * 24 * time.Hour,
			DuplicateWindow: 24 * time.Hour,
		},
	}
}

// DefaultTarget is a [[target]] with every default and nothing required set.
func DefaultTarget() Target {
	return Target{
		Port:            22,
		HostKey:         HostKeyStrict,
		RemoteDir:       ".",
		Atomic:          true,
		Overwrite:       true,
		Protocol:        "auto",
		Connections:     2,
		ConnectTimeout:  15 * time.Second,
		StallTimeout:    60 * time.Second,
		SSHOptions:      []string{},
		RetryMax:        10,
		RetryBackoff:    5 * time.Second,
		RetryBackoffMax: 5 * time.Minute,
	}
}

// DefaultWatch is a [[watch]] with every default and nothing required set.
func DefaultWatch() Watch {
	return Watch{
		Recursive: true,
		Include:   []string{"*"},
		Exclude:   []string{},
		Settle:    2 * time.Second,
		After:     AfterArchive,
	}
}

// defaultAgentName is the host name made into a NATS subject token.
func defaultAgentName() string {
	h, _ := os.Hostname()
	h = strings.Map(func(r rune) rune {
		if strings.ContainsRune(".*>", r) || isSpaceOrControl(r) {
			return '-'
		}
		return r
	}, h)
	if h == "" {
		return "dropship"
	}
	return h
}

// Target returns the target called name, or nil.
func (c *Config) Target(name string) *Target {
	for i := range c.Targets {
		if c.Targets[i].Name == name {
			return &c.Targets[i]
		}
	}
	return nil
}

// Parse reads a configuration from r, applies defaults and validates
// everything that can be checked without the file system: syntax, types,
// unknown keys, values, ranges and references between tables. file names the
// source in problems, and relative paths in the configuration are taken
// relative to its directory.
//
// When anything is wrong, Parse returns a nil Config and every problem as
// Problems.
func Parse(r io.Reader, file string) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", file, err)
	}
	p := parse(string(data), file, filepath.Dir(file))
	if err := p.d.probs.err(); err != nil {
		return nil, err
	}
	return p.cfg, nil
}

// Load reads and parses file, makes every path in it absolute, and checks the
// file system too: watched folders must exist and be folders, secret files
// must exist, be regular files and be private to their owner.
//
// Problems found by parsing and by these checks are all returned together as
// Problems, naming file as given; a file that cannot be read is an ordinary
// wrapped error.
func Load(file string) (*Config, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	p := parse(string(data), file, filepath.Dir(abs))
	if p.cfg != nil {
		p.cfg.File = abs
		p.checkFiles()
	}
	if err := p.d.probs.err(); err != nil {
		return nil, err
	}
	return p.cfg, nil
}

// TargetNames are the targets w sends to: Targets, or Target alone when
// Targets is not set (a Watch built in code).
func (w *Watch) TargetNames() []string {
	if len(w.Targets) > 0 {
		return w.Targets
	}
	if w.Target != "" {
		return []string{w.Target}
	}
	return nil
}
