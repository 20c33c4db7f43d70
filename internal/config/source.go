package config

import (
	"fmt"
	"path"
	"path/filepath"
	"time"
)

// Source is one [[source]]: a partner's SFTP server that dropship pulls
// files from, to deliver them to its targets like the files of a watch.
type Source struct {
	// Conn is the connection: every key of a [[target]] that says how to
	// reach and log in to the server (name, host, port, user, secrets,
	// host_key, known_hosts_file, remote_dir, protocol, connections,
	// timeouts, ssh_options, bandwidth, retries). Its Name is the source's.
	Conn Target
	// Targets are where its files go (target = "a" or targets = [...]);
	// After runs on the source once every one has the file.
	Targets     []string
	Recursive   bool
	Include     []string
	Exclude     []string
	Interval    time.Duration // between listings, with up to a tenth of jitter
	MinAge      time.Duration // a file's mtime must be at least this old
	MaxAge      time.Duration // 0: no limit; older files are ignored
	ReadyMarker string
	After       string // keep, delete or move
	MoveDir     string // the server's folder that After = "move" moves into
	// Remember is how long the journal remembers a fetched version once it
	// is no longer listed: one still listed is never fetched again (with
	// After = "keep" above all).
	Remember time.Duration
	Line     int
}

// Source returns the source called name, or nil.
func (c *Config) Source(name string) *Source {
	for i := range c.Sources {
		if c.Sources[i].Name() == name {
			return &c.Sources[i]
		}
	}
	return nil
}

// Name is the source's name.
func (s *Source) Name() string { return s.Conn.Name }

// The value of Source.After besides keep and delete.
const AfterMove = "move"

// SpoolDir is the folder under state_dir where a source's files are fetched
// to, to be delivered from there like the files of a watch.
func SpoolDir(stateDir, source string) string {
	return filepath.Join(stateDir, "spool", source)
}

// SpoolWatch is the watch that delivers what source s fetched: its spool
// folder, to s's targets, each file deleted from the spool once every
// target has it.
func (c *Config) SpoolWatch(s *Source) Watch {
	w := DefaultWatch()
	w.Path = SpoolDir(c.Agent.StateDir, s.Name())
	w.Target, w.Targets = s.Targets[0], s.Targets
	w.Settle = 0
	w.After = AfterDelete
	w.Source = s.Name()
	w.Line = s.Line
	return w
}

// AllWatches are the configured watches and the spool watch of every source.
func (c *Config) AllWatches() []Watch {
	out := append([]Watch(nil), c.Watches...)
	for i := range c.Sources {
		if len(c.Sources[i].Targets) > 0 {
			out = append(out, c.SpoolWatch(&c.Sources[i]))
		}
	}
	return out
}

// DefaultSource is a [[source]] with every default and nothing required set.
func DefaultSource() Source {
	return Source{
		Conn:     DefaultTarget(),
		Include:  []string{"*"},
		Exclude:  []string{},
		Interval: time.Minute,
		After:    AfterKeep,
		Remember: 30 * 24 * time.Hour,
	}
}

// targetOnly are the [[target]] keys that mean nothing to a source, which
// only reads.
var targetOnly = []string{"atomic", "overwrite", "preserve", "window", "retry_max", "retry_backoff", "retry_backoff_max"}

func (t *table) source(s *Source) {
	t.target(&s.Conn)
	d := DefaultSource()
	conn := s.Conn
	*s = d
	s.Conn = conn
	s.Line = s.Conn.Line
	for _, k := range targetOnly {
		if t.has(k) {
			t.problem(k, "is a [[target]] key; a [[source]] only reads from its server: remove it")
		}
	}
	if s.Conn.Protocol == "scp" {
		t.problem("protocol", `a source needs SFTP to list its folder: set protocol = "sftp" or "auto"`)
	}
	_, s.Targets = t.targetNames()
	t.boolean("recursive", &s.Recursive)
	if t.stringList("include", &s.Include, checkGlob) && len(s.Include) == 0 {
		t.problem("include", `must not be empty, or no file would ever be fetched; ["*"] includes every file`)
	}
	t.stringList("exclude", &s.Exclude, checkGlob)
	t.duration("interval", &s.Interval, true)
	t.duration("min_age", &s.MinAge, false)
	t.duration("max_age", &s.MaxAge, false)
	if t.str("ready_marker", &s.ReadyMarker) {
		t.check("ready_marker", checkReadyMarker(s.ReadyMarker))
	}
	t.oneOf("after", &s.After, AfterKeep, AfterDelete, AfterMove)
	if t.str("move_dir", &s.MoveDir) && s.MoveDir != "" {
		t.check("move_dir", checkRemoteDir(s.MoveDir))
		if s.After != AfterMove {
			t.problem("move_dir", fmt.Sprintf("is only used with after = %q, but after is %q; remove move_dir or set after = %q", AfterMove, s.After, AfterMove))
		}
		if path.Clean(s.MoveDir) == path.Clean(s.Conn.RemoteDir) {
			t.problem("move_dir", "is remote_dir itself: moved files would be fetched again; name another folder of the server")
		}
	}
	if s.After == AfterMove && s.MoveDir == "" {
		t.problem("after", `after = "move" needs move_dir, the server's folder to move fetched files into`)
	}
	t.duration("remember", &s.Remember, true)
}

// crossCheckSources checks the sources' names and targets, and fills in
// their known_hosts_file.
func (p *parsed) crossCheckSources(cfg *Config) {
	names := map[string]int{}
	for i := range cfg.Sources {
		s, t := &cfg.Sources[i], p.sources[i]
		if s.Conn.KnownHostsFile == "" {
			s.Conn.KnownHostsFile = filepath.Join(cfg.Agent.StateDir, "known_hosts")
		}
		for _, name := range s.Targets {
			if cfg.Target(name) == nil {
				k := "target"
				if t.has("targets") {
					k = "targets"
				}
				t.problem(k, unknownTarget(name, cfg.Targets))
			}
		}
		if s.Name() == "" {
			continue
		}
		if cfg.Target(s.Name()) != nil {
			t.problem("name", fmt.Sprintf("a [[target]] is named %q too; give the source a name of its own (its events and log lines would share the target's subjects)", s.Name()))
			continue
		}
		if j, dup := names[s.Name()]; dup {
			t.problem("name", fmt.Sprintf("duplicate source name %q; the [[source]] at line %d has it already", s.Name(), cfg.Sources[j].Line))
			continue
		}
		names[s.Name()] = i
	}
}
