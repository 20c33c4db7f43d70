package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// decoder collects the problems of one file. The TOML is first decoded into
// generic maps, then every table is read key by key by a table, which checks
// types itself so that every wrong type is reported, not just the first.
type decoder struct {
	file     string
	dir      string // relative paths are taken relative to this
	loc      *locator
	probs    Problems
	sections map[string][]string // keys of each section, for hints; built on demand
}

// add records a problem; its message is kept on one line.
func (d *decoder) add(line int, key, msg string) {
	if strings.ContainsAny(msg, "\r\n") {
		msg = strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(msg)
	}
	d.probs = append(d.probs, Problem{File: d.file, Line: line, Key: key, Message: msg})
}

// abs makes a configured path absolute against the config file's folder
// (or as absolute as that folder is) and cleans it.
func (d *decoder) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(d.dir, p)
}

// parsed is the outcome of parse: the configuration as far as it could be
// read, and the tables it came from, whose lines Load's checks need.
type parsed struct {
	cfg     *Config // nil after a syntax error
	d       *decoder
	nats    *table // nil when there is no [nats]
	targets []*table
	watches []*table
	sources []*table
}

func parse(src, file, dir string) *parsed {
	src = stripBOM(src) // as the decoder does, so that its offsets fit src
	d := &decoder{file: file, dir: dir}
	p := &parsed{d: d}
	if line, msg := checkShape(src); msg != "" {
		d.add(line, "", msg)
		return p
	}
	var raw map[string]any
	if _, err := toml.Decode(src, &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// At the end of input the decoder's line can be one short;
			// the byte offset is right.
			line := pe.Position.Line
			if pe.Position.Start >= 0 && pe.Position.Start <= len(src) {
				line = 1 + strings.Count(src[:pe.Position.Start], "\n")
			}
			d.add(max(line, 1), "", "syntax error: "+pe.Message)
		} else {
			d.add(0, "", "syntax error: "+err.Error())
		}
		return p
	}
	d.loc = locate(src)
	cfg := Default()
	cfg.File = file

	root := &table{d: d, raw: raw}
	var tables []*table
	if t := root.sub("agent"); t != nil {
		t.agent(&cfg.Agent)
		tables = append(tables, t)
	}
	if t := root.sub("nats"); t != nil {
		t.nats(&cfg.NATS)
		tables = append(tables, t)
		p.nats = t
	}
	p.targets = root.array("target")
	for _, t := range p.targets {
		var tg Target
		t.target(&tg)
		cfg.Targets = append(cfg.Targets, tg)
		tables = append(tables, t)
	}
	p.sources = root.array("source")
	for _, t := range p.sources {
		var src Source
		t.source(&src)
		cfg.Sources = append(cfg.Sources, src)
		tables = append(tables, t)
	}
	p.watches = root.array("watch")
	for _, t := range p.watches {
		var w Watch
		t.watch(&w)
		cfg.Watches = append(cfg.Watches, w)
		tables = append(tables, t)
	}
	root.unknown()
	for _, t := range tables {
		t.unknown()
	}
	p.crossCheck(cfg)
	p.crossCheckSources(cfg)
	p.cfg = cfg
	return p
}

// crossCheck validates what concerns more than one table and fills in the
// defaults that depend on other keys.
func (p *parsed) crossCheck(cfg *Config) {
	names := map[string]int{} // target name → index
	for i := range cfg.Targets {
		tg, t := &cfg.Targets[i], p.targets[i]
		if tg.KnownHostsFile == "" {
			tg.KnownHostsFile = filepath.Join(cfg.Agent.StateDir, "known_hosts")
		}
		if tg.Name == "" {
			continue
		}
		if j, dup := names[tg.Name]; dup {
			t.problem("name", fmt.Sprintf("duplicate target name %q; the [[target]] at line %d has it already", tg.Name, cfg.Targets[j].Line))
			continue
		}
		names[tg.Name] = i
	}

	paths, lines := make([]string, len(cfg.Watches)), make([]int, len(cfg.Watches))
	at := map[string][]int{} // watched folder → its watches
	for i := range cfg.Watches {
		w, t := &cfg.Watches[i], p.watches[i]
		for _, name := range w.Targets {
			if cfg.Target(name) == nil {
				k := "target"
				if t.has("targets") {
					k = "targets"
				}
				t.problem(k, unknownTarget(name, cfg.Targets))
			}
		}
		if w.After == AfterArchive && w.ArchiveDir == "" && w.Path != "" {
			w.ArchiveDir = filepath.Join(w.Path, DefaultArchiveDir)
		}
		if w.Path != "" {
			if msg := watchPlace(w.Path, cfg.Agent.StateDir); msg != "" {
				t.problem("path", msg)
			}
			at[w.Path] = append(at[w.Path], i)
		}
		paths[i], lines[i] = w.Path, w.Line
	}
	overlapping(paths, lines, func(i int, msg string) { p.watches[i].problem("path", msg) })

	// Files moved out of a watched folder must not land where they would be
	// picked up again: in a watched folder, or below one.
	for i := range cfg.Watches {
		w, t := &cfg.Watches[i], p.watches[i]
		for _, k := range []struct {
			key, dir string
		}{{"archive_dir", w.ArchiveDir}, {"failed_dir", w.FailedDir}} {
			if k.dir == "" || !t.has(k.key) {
				continue
			}
			reported := 0
			for q := k.dir; reported < maxOverlapReports; q = filepath.Dir(q) {
				for _, j := range at[q] {
					if msg := landsInWatch(k.dir, &cfg.Watches[j], i == j); msg != "" && reported < maxOverlapReports {
						t.problem(k.key, msg)
						reported++
					}
				}
				if q == filepath.Dir(q) {
					break
				}
			}
		}
	}
}

func unknownTarget(name string, targets []Target) string {
	var known []string
	for _, tg := range targets {
		if tg.Name != "" {
			known = append(known, tg.Name)
		}
	}
	if len(known) == 0 {
		return fmt.Sprintf("no [[target]] named %q: no target is defined", name)
	}
	msg := fmt.Sprintf("no [[target]] named %q", name)
	if s := closest(name, known); s != "" {
		return msg + fmt.Sprintf("; did you mean %s?", s)
	}
	return msg + " (targets: " + strings.Join(known, ", ") + ")"
}

// overlap explains why the watched folders a and b (b from the watch at
// line) must not both be watched, or returns "".
func overlap(a, b string, line int) string {
	switch {
	case a == b:
		return fmt.Sprintf("%s is already watched by the [[watch]] at line %d", a, line)
	case within(a, b):
		return fmt.Sprintf("%s is inside %s, watched by the [[watch]] at line %d; watched folders must not overlap", a, b, line)
	case within(b, a):
		return fmt.Sprintf("%s contains %s, watched by the [[watch]] at line %d; watched folders must not overlap", a, b, line)
	}
	return ""
}

// landsInWatch explains why dir, where files are moved after sending, must
// not be in the folder of watch v, or returns "". own says v is the watch dir
// belongs to.
func landsInWatch(dir string, v *Watch, own bool) string {
	if dir == v.Path {
		if own {
			return "must not be the watched folder itself"
		}
		return fmt.Sprintf("%s is watched by the [[watch]] at line %d", dir, v.Line)
	}
	if !v.Recursive || !within(dir, v.Path) {
		return ""
	}
	rel, err := filepath.Rel(v.Path, dir)
	if err != nil {
		return ""
	}
	for _, elem := range strings.Split(rel, string(filepath.Separator)) {
		if strings.HasPrefix(elem, ".") {
			return "" // hidden folders are never watched
		}
	}
	where := "the watched folder"
	if !own {
		where = fmt.Sprintf("%s, watched by the [[watch]] at line %d,", v.Path, v.Line)
	}
	return fmt.Sprintf("%s is inside %s so its files would be sent again; use a folder whose name starts with \".\" or one outside", dir, where)
}

// within reports whether path a is strictly inside folder b; both are clean.
func within(a, b string) bool {
	if b == string(filepath.Separator) {
		return a != b && strings.HasPrefix(a, b)
	}
	return strings.HasPrefix(a, b+string(filepath.Separator))
}

// table reads the keys of one TOML table, reporting wrong types, bad values
// and, in the end, the keys it was never asked for.
type table struct {
	d     *decoder
	name  string   // key prefix in problems: "agent", "target"; "" for the root
	path  []string // locator path: "target", "2"
	raw   map[string]any
	known []string // every key asked for, in order
}

// key returns the dotted name of k for problems, quoting k as TOML would
// when it is not a bare key.
func (t *table) key(k string) string {
	if k == "" || strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != "" {
		k = strconv.Quote(k)
	}
	if t.name == "" {
		return k
	}
	return t.name + "." + k
}

func (t *table) at(k ...string) []string {
	return append(append([]string(nil), t.path...), k...)
}

// headerLine is the line of the table's header, or of its first mention.
func (t *table) headerLine() int {
	if len(t.path) == 0 {
		return 0
	}
	return t.d.loc.line(t.path...)
}

// line is the line of key k, or of the table when k is not in the file.
func (t *table) line(k string) int {
	if l := t.d.loc.line(t.at(k)...); l > 0 {
		return l
	}
	return t.headerLine()
}

func (t *table) problem(k, msg string) { t.d.add(t.line(k), t.key(k), msg) }

// elemProblem reports a problem with element i of the array k, on the line
// where that element is.
func (t *table) elemProblem(k string, i int, msg string) {
	l := t.d.loc.line(t.at(k, strconv.Itoa(i))...)
	if l == 0 {
		l = t.line(k)
	}
	t.d.add(l, t.key(k), msg)
}

// check reports err, if any, as a problem with k.
func (t *table) check(k string, err error) bool {
	if err != nil {
		t.problem(k, err.Error())
		return false
	}
	return true
}

func (t *table) has(k string) bool {
	_, ok := t.raw[k]
	return ok
}

// lookup returns the value of k and records k as a known key.
func (t *table) lookup(k string) (any, bool) {
	t.known = append(t.known, k)
	v, ok := t.raw[k]
	return v, ok
}

func (t *table) wrongType(k string, v any, want string) {
	t.problem(k, fmt.Sprintf("must be %s, not %s", want, typeName(v)))
}

// str reads string k into dst and reports whether it did.
func (t *table) str(k string, dst *string) bool {
	v, ok := t.lookup(k)
	if !ok {
		return false
	}
	s, ok := v.(string)
	if !ok {
		t.wrongType(k, v, "a string")
		return false
	}
	*dst = s
	return true
}

// required reads string k, which must be present and not empty.
func (t *table) required(k string, dst *string) bool {
	if !t.has(k) {
		t.lookup(k)
		t.d.add(t.headerLine(), t.key(k), fmt.Sprintf("missing; every [[%s]] needs one", t.name))
		return false
	}
	var s string
	if !t.str(k, &s) {
		return false
	}
	if s == "" {
		t.problem(k, "must not be empty")
		return false
	}
	*dst = s
	return true
}

func (t *table) boolean(k string, dst *bool) bool {
	v, ok := t.lookup(k)
	if !ok {
		return false
	}
	b, ok := v.(bool)
	if !ok {
		t.wrongType(k, v, "true or false")
		return false
	}
	*dst = b
	return true
}

// integer reads k into dst if it is an integer within [lo, hi].
func (t *table) integer(k string, dst *int, lo, hi int64) bool {
	v, ok := t.lookup(k)
	if !ok {
		return false
	}
	n, ok := v.(int64)
	if !ok {
		t.wrongType(k, v, "an integer")
		return false
	}
	switch {
	case n >= lo && n <= hi:
	case hi == maxInt && n < lo:
		t.problem(k, fmt.Sprintf("must be at least %d, not %d", lo, n))
		return false
	default:
		t.problem(k, fmt.Sprintf("must be between %d and %d, not %d", lo, hi, n))
		return false
	}
	*dst = int(n)
	return true
}

const maxInt = int64(^uint32(0) >> 1)

// duration reads the Go duration string k into dst if it is at least min;
// positive asks for more than min.
func (t *table) duration(k string, dst *time.Duration, positive bool) bool {
	v, ok := t.lookup(k)
	if !ok {
		return false
	}
	s, ok := v.(string)
	if !ok {
		t.wrongType(k, v, `a duration string such as "30s"`)
		return false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.problem(k, fmt.Sprintf(`%q is not a duration; write it like "45s", "1m30s" or "2h"`, s))
		return false
	}
	switch {
	case positive && d <= 0:
		t.problem(k, fmt.Sprintf("must be more than 0, not %q", s))
		return false
	case d < 0:
		t.problem(k, fmt.Sprintf("must not be negative, not %q", s))
		return false
	}
	*dst = d
	return true
}

// stringList reads the array of strings k into dst; ok checks each element.
func (t *table) stringList(k string, dst *[]string, ok func(string) error) bool {
	v, present := t.lookup(k)
	if !present {
		return false
	}
	arr, isArr := v.([]any)
	if !isArr {
		t.wrongType(k, v, "an array of strings")
		return false
	}
	out := make([]string, 0, len(arr))
	good := true
	for i, e := range arr {
		s, isStr := e.(string)
		if !isStr {
			t.elemProblem(k, i, fmt.Sprintf("element %d must be a string, not %s", i+1, typeName(e)))
			good = false
			continue
		}
		if err := ok(s); err != nil {
			t.elemProblem(k, i, fmt.Sprintf("element %d: %v", i+1, err))
			good = false
			continue
		}
		out = append(out, s)
	}
	if good {
		*dst = out
	}
	return good
}

// filePath reads the folder or file path k, made absolute, into dst. An empty
// value is kept when optional.
func (t *table) filePath(k string, dst *string, optional bool) bool {
	var s string
	if !t.str(k, &s) {
		return false
	}
	if s == "" {
		if !optional {
			t.problem(k, "must not be empty")
			return false
		}
		*dst = ""
		return true
	}
	if !t.check(k, checkPath(s)) {
		return false
	}
	*dst = t.d.abs(s)
	return true
}

// fileRef reads a file reference: a path, made absolute, or credential:NAME,
// kept as it is. Empty means none.
func (t *table) fileRef(k string, dst *string) bool {
	var s string
	if !t.str(k, &s) {
		return false
	}
	if name, ok := strings.CutPrefix(s, credentialPrefix); ok {
		if !t.check(k, checkCredentialName(name)) {
			return false
		}
		*dst = s
		return true
	}
	return t.filePath(k, dst, true)
}

func (t *table) oneOf(k string, dst *string, choices ...string) bool {
	var s string
	if !t.str(k, &s) {
		return false
	}
	if !slices.Contains(choices, s) {
		t.problem(k, fmt.Sprintf("%q is not one of %s", s, strings.Join(choices, ", ")))
		return false
	}
	*dst = s
	return true
}

// sub returns the table k of the root, or nil when it is absent or not a
// table.
func (t *table) sub(k string) *table {
	v, ok := t.lookup(k)
	if !ok {
		return nil
	}
	switch m := v.(type) {
	case map[string]any:
		return &table{d: t.d, name: k, path: []string{k}, raw: m}
	case []map[string]any:
		t.problem(k, fmt.Sprintf("must be a single table: write [%s], not [[%s]]", k, k))
	default:
		t.wrongType(k, v, "a table")
	}
	return nil
}

// array returns the elements of the array of tables k of the root.
func (t *table) array(k string) []*table {
	v, ok := t.lookup(k)
	if !ok {
		return nil
	}
	var elems []map[string]any
	switch a := v.(type) {
	case []map[string]any:
		elems = a
	case []any: // k = [{...}, {...}]
		for _, e := range a {
			m, ok := e.(map[string]any)
			if !ok {
				t.wrongType(k, v, "an array of tables")
				return nil
			}
			elems = append(elems, m)
		}
	case map[string]any:
		t.problem(k, fmt.Sprintf("must be an array of tables: write [[%s]], not [%s]", k, k))
		return nil
	default:
		t.wrongType(k, v, "an array of tables")
		return nil
	}
	tables := make([]*table, len(elems))
	for i, m := range elems {
		tables[i] = &table{d: t.d, name: k, path: []string{k, strconv.Itoa(i)}, raw: m}
	}
	return tables
}

// unknown reports every key of the table that was never looked up.
func (t *table) unknown() {
	var keys []string
	for k := range t.raw {
		if !slices.Contains(t.known, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		what := "key"
		switch t.raw[k].(type) {
		case map[string]any, []map[string]any:
			what = "table"
		}
		msg := "unknown " + what
		if where := t.d.sectionsWith(k); len(where) > 0 {
			msg += "; " + k + " belongs in " + strings.Join(where, " or ")
		} else if s := closest(k, t.known); s != "" {
			msg += "; did you mean " + s + "?"
		}
		t.problem(k, msg)
	}
}

// sectionsWith names the sections that have a key k, such as "[[target]]".
func (d *decoder) sectionsWith(k string) []string {
	if d.sections == nil {
		d.sections = sectionKeys()
	}
	var where []string
	for _, s := range []string{"[agent]", "[nats]", "[[target]]", "[[watch]]", "[[source]]"} {
		if slices.Contains(d.sections[s], k) {
			where = append(where, s)
		}
	}
	return where
}

// sectionKeys lists the keys of every section, by reading empty tables.
func sectionKeys() map[string][]string {
	d := &decoder{loc: &locator{}}
	empty := func() *table { return &table{d: d, raw: map[string]any{}} }
	a, n, tg, w, src := empty(), empty(), empty(), empty(), empty()
	a.agent(&Agent{})
	n.nats(&NATS{})
	tg.target(&Target{})
	w.watch(&Watch{})
	src.source(&Source{})
	return map[string][]string{"[agent]": a.known, "[nats]": n.known, "[[target]]": tg.known, "[[watch]]": w.known, "[[source]]": src.known}
}

// maxSuggestLen bounds the names closest compares, as the edit distance
// takes time in the product of their lengths.
const maxSuggestLen = 128

// closest returns the candidate nearest to k when it is close enough to be
// a likely typo (at most 2 edits), or else one that k begins, such as
// password_file for password; or "".
func closest(k string, candidates []string) string {
	best, bestDist := "", 3
	if len(k) > maxSuggestLen {
		return "" // no key is that long, and comparing would take long
	}
	for _, c := range candidates {
		if len(c) > maxSuggestLen {
			continue
		}
		d := levenshtein(strings.ToLower(k), strings.ToLower(c))
		if d < bestDist && d < len(k) {
			best, bestDist = c, d
		}
	}
	if best == "" && len(k) >= 4 {
		for _, c := range candidates {
			if strings.HasPrefix(c, strings.ToLower(k)+"_") {
				return c
			}
		}
	}
	return best
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("a %T", v)
}

func (t *table) agent(a *Agent) {
	if t.str("name", &a.Name) {
		t.check("name", checkToken(a.Name))
	}
	t.filePath("state_dir", &a.StateDir, false)
	t.oneOf("log_level", &a.LogLevel, "debug", "info", "warn", "error")
	t.oneOf("log_format", &a.LogFormat, "text", "json")
	if t.str("metrics_listen", &a.MetricsListen) && a.MetricsListen != "" {
		t.check("metrics_listen", checkHostPort(a.MetricsListen))
	}
	t.duration("shutdown_grace", &a.ShutdownGrace, false)
}

func (t *table) nats(n *NATS) {
	if t.str("url", &n.URL) && n.URL != "" {
		t.check("url", checkNATSURLs(n.URL))
	}
	if t.str("embedded_listen", &n.EmbeddedListen) {
		t.check("embedded_listen", checkHostPort(n.EmbeddedListen))
	}
	if t.str("subject_prefix", &n.SubjectPrefix) {
		t.check("subject_prefix", checkSubjectPrefix(n.SubjectPrefix))
	}
	t.fileRef("credentials_file", &n.CredentialsFile)
	t.natsAuth(n)
	if t.str("stream", &n.Stream) {
		t.check("stream", checkStream(n.Stream))
	}
	t.boolean("auto_create_stream", &n.AutoCreateStream)
	if t.integer("stream_replicas", &n.StreamReplicas, 1, 5) && n.StreamReplicas > 1 && n.URL == "" {
		t.problem("stream_replicas", fmt.Sprintf("%d replicas need a NATS cluster, and the embedded server is one server: set nats.url to the cluster, or stream_replicas = 1", n.StreamReplicas))
	}
	t.boolean("publish_logs", &n.PublishLogs)
	t.oneOf("cloudevents_mode", &n.CloudEventsMode, "structured", "binary")
	var size string
	if t.str("stream_max_bytes", &size) {
		v, err := ParseSize(size)
		if t.check("stream_max_bytes", err) && v < 1<<20 {
			t.problem("stream_max_bytes", fmt.Sprintf("%q is less than 1 MiB, too small to hold a day of events; give at least \"100MiB\"", size))
		}
		n.StreamMaxBytes = v
	}
	t.duration("stream_max_age", &n.StreamMaxAge, true)
	if t.duration("duplicate_window", &n.DuplicateWindow, true) && n.DuplicateWindow < 2*time.Minute {
		t.problem("duplicate_window", fmt.Sprintf("%s is shorter than JetStream's default of 2m; events republished after an outage would be stored twice: give at least \"1h\", better \"24h\"", n.DuplicateWindow))
	}
	t.str("stream_cluster", &n.StreamCluster)
	if t.stringList("stream_tags", &n.StreamTags, func(string) error { return nil }) && len(n.StreamTags) == 0 {
		n.StreamTags = nil
	}
}

func (t *table) target(tg *Target) {
	*tg = DefaultTarget()
	tg.Line = t.headerLine()
	if t.required("name", &tg.Name) {
		t.check("name", checkTargetName(tg.Name))
	}
	if t.required("host", &tg.Host) {
		h, err := checkHost(tg.Host)
		t.check("host", err)
		tg.Host = h
	}
	t.integer("port", &tg.Port, 1, 65535)
	if t.required("user", &tg.User) {
		t.check("user", checkUser(tg.User))
	}
	t.fileRef("password_file", &tg.PasswordFile)
	t.fileRef("identity_file", &tg.IdentityFile)
	identity := tg.IdentityFile != "" || t.has("identity_file") && t.raw["identity_file"] != ""
	if t.fileRef("passphrase_file", &tg.PassphraseFile) && tg.PassphraseFile != "" && !identity {
		t.problem("passphrase_file", "is only used to unlock identity_file, which is not set; set identity_file or remove passphrase_file")
	}
	if t.str("host_key", &tg.HostKey) {
		t.check("host_key", checkHostKey(tg.HostKey))
	}
	var kh string
	if t.str("known_hosts_file", &kh) {
		if strings.HasPrefix(kh, credentialPrefix) {
			t.problem("known_hosts_file", "cannot be a credential: dropship adds keys to it with host_key = \"accept-new\"; give a path")
		} else {
			t.filePath("known_hosts_file", &tg.KnownHostsFile, true)
		}
	}
	if t.str("remote_dir", &tg.RemoteDir) {
		t.check("remote_dir", checkRemoteDir(tg.RemoteDir))
	}
	t.boolean("atomic", &tg.Atomic)
	t.boolean("overwrite", &tg.Overwrite)
	t.oneOf("protocol", &tg.Protocol, "auto", "sftp", "scp")
	t.boolean("preserve", &tg.Preserve)
	var bw, win string
	if t.str("bandwidth", &bw) {
		n, err := ParseBandwidth(bw)
		t.check("bandwidth", err)
		tg.Bandwidth = n
	}
	if t.str("window", &win) {
		w, err := ParseWindow(win)
		t.check("window", err)
		tg.Window = w
	}
	t.integer("connections", &tg.Connections, 1, 64)
	t.duration("connect_timeout", &tg.ConnectTimeout, true)
	t.duration("stall_timeout", &tg.StallTimeout, true)
	t.stringList("ssh_options", &tg.SSHOptions, checkSSHOption)
	t.integer("retry_max", &tg.RetryMax, 1, maxInt)
	okMin := t.duration("retry_backoff", &tg.RetryBackoff, true) || !t.has("retry_backoff")
	okMax := t.duration("retry_backoff_max", &tg.RetryBackoffMax, true) || !t.has("retry_backoff_max")
	if okMin && okMax && tg.RetryBackoffMax < tg.RetryBackoff {
		k := "retry_backoff_max"
		if !t.has(k) {
			k = "retry_backoff"
		}
		t.problem(k, fmt.Sprintf("retry_backoff_max (%v) must not be less than retry_backoff (%v)", tg.RetryBackoffMax, tg.RetryBackoff))
	}
}

func (t *table) watch(w *Watch) {
	*w = DefaultWatch()
	w.Line = t.headerLine()
	if t.required("path", &w.Path) && !t.filePath("path", &w.Path, false) {
		w.Path = ""
	}
	w.Target, w.Targets = t.targetNames()
	t.boolean("recursive", &w.Recursive)
	if t.stringList("include", &w.Include, checkGlob) && len(w.Include) == 0 {
		t.problem("include", `must not be empty, or no file would ever be sent; ["*"] includes every file`)
	}
	t.stringList("exclude", &w.Exclude, checkGlob)
	t.duration("settle", &w.Settle, false)
	if t.str("ready_marker", &w.ReadyMarker) {
		t.check("ready_marker", checkReadyMarker(w.ReadyMarker))
	}
	t.boolean("follow_symlinks", &w.FollowSymlinks)
	t.oneOf("after", &w.After, AfterArchive, AfterDelete, AfterKeep)
	if t.filePath("archive_dir", &w.ArchiveDir, true) && w.ArchiveDir != "" && w.After != AfterArchive {
		t.problem("archive_dir", fmt.Sprintf("is only used with after = %q, but after is %q; remove archive_dir or set after = %q", AfterArchive, w.After, AfterArchive))
	}
	t.filePath("failed_dir", &w.FailedDir, true)
	seen := map[string]bool{}
	for _, rt := range t.nested("route") {
		r := Route{Line: rt.headerLine()}
		rt.required("target", &r.Target)
		rt.str("match", &r.Match)
		rt.str("rename", &r.Rename)
		rt.unknown()
		if r.Target == "" {
			continue
		}
		if seen[r.Target] {
			rt.problem("target", fmt.Sprintf("a second route for target %q: one route per target", r.Target))
			continue
		}
		seen[r.Target] = true
		if err := r.check(w.TargetNames()); err != nil {
			k := "rename"
			switch {
			case !containsString(w.TargetNames(), r.Target):
				k = "target"
			case strings.HasPrefix(err.Error(), "match"):
				k = "match"
			}
			rt.problem(k, err.Error())
			continue
		}
		w.Routes = append(w.Routes, r)
	}
}

// targetNames reads target = "a" or targets = ["a", "b"]: the first and all.
func (t *table) targetNames() (string, []string) {
	switch {
	case t.has("target") && t.has("targets"):
		t.lookup("target")
		t.lookup("targets")
		t.problem("targets", "set either target (one) or targets (several), not both")
	case t.has("targets"):
		var names []string
		if t.stringList("targets", &names, checkTargetName) {
			seen := map[string]bool{}
			for _, n := range names {
				if seen[n] {
					t.problem("targets", fmt.Sprintf("names target %q twice", n))
				}
				seen[n] = true
			}
			if len(names) == 0 {
				t.problem("targets", `must name at least one target, as in targets = ["acme", "backup"]`)
				return "", nil
			}
			return names[0], names
		}
	default:
		var name string
		if t.required("target", &name) {
			return name, []string{name}
		}
	}
	return "", nil
}

// nested returns the elements of the array of tables k inside t, such as
// [[watch.route]] inside a [[watch]].
func (t *table) nested(k string) []*table {
	v, ok := t.lookup(k)
	if !ok {
		return nil
	}
	elems, ok := v.([]map[string]any)
	if !ok {
		t.wrongType(k, v, fmt.Sprintf("an array of tables: write [[%s.%s]] after the [[%s]] it belongs to", t.name, k, t.name))
		return nil
	}
	tables := make([]*table, len(elems))
	for i, m := range elems {
		tables[i] = &table{d: t.d, name: t.name + "." + k, path: t.at(k, strconv.Itoa(i)), raw: m}
	}
	return tables
}
