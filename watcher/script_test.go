package watcher

// The watcher's behaviour tests are small scripts in testdata/*.txt, one case
// per file, in the spirit of fsnotify's testdata. A script sets options,
// starts a watcher on a fresh root, acts on the file system and states what
// must (and must not) be reported. The command reference is the switch in
// (*script).exec below; paths are relative to the watched root, "@out/..."
// is a folder outside it.
//
// Every report must be claimed by a wait-ready step: one left over when the
// script ends (a file reported early, twice, or that should have been
// ignored) fails the test. At the end the watcher is closed and both of its
// channels must be closed.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/pkg/sftp"
	"golang.org/x/sys/unix"
)

const (
	// scriptChildEnv names the script a re-executed test binary must run
	// (see "sandbox").
	scriptChildEnv = "DROPSHIP_WATCHER_SCRIPT_CHILD"
	// requireSFTPEnv turns a missing sftp-server into a failure (CI).
	requireSFTPEnv = "DROPSHIP_REQUIRE_SSHD"
	// defaultWithin bounds every wait. Generous: CI machines are small.
	defaultWithin = 20 * time.Second
)

func TestScripts(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no scripts in testdata: %v", err)
	}
	child := os.Getenv(scriptChildEnv)
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".txt")
		t.Run(name, func(t *testing.T) {
			s := parseScript(t, p)
			if child == "" {
				if s.sandbox != nil {
					runSandboxed(t, name, s.sandbox)
					return
				}
				t.Parallel()
			}
			s.run(t)
		})
	}
}

// step is one line of a script.
type step struct {
	line int
	cmd  string
	args []string
	kv   map[string]string
}

func (st step) String() string {
	return fmt.Sprintf("line %d: %s %s", st.line, st.cmd, strings.Join(st.args, " "))
}

type script struct {
	file    string
	steps   []step
	sandbox []string // "nobody" or "watch-limit N"
}

func parseScript(t *testing.T, file string) *script {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := &script{file: file}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		toks, err := tokenize(line)
		if err != nil {
			t.Fatalf("%s:%d: %v", file, n, err)
		}
		st := step{line: n, cmd: toks[0], kv: map[string]string{}}
		for _, tok := range toks[1:] {
			if k, v, ok := strings.Cut(tok, "="); ok && k != "" && !strings.ContainsAny(k, "/*.@") {
				st.kv[k] = v
				continue
			}
			st.args = append(st.args, tok)
		}
		if st.cmd == "sandbox" {
			s.sandbox = st.args
			continue
		}
		s.steps = append(s.steps, st)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

// tokenize splits on spaces; double quotes group, with Go escapes inside.
func tokenize(line string) ([]string, error) {
	var toks []string
	var cur strings.Builder
	inTok, inQuote := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			inQuote, inTok = !inQuote, true
		case !inQuote && (c == ' ' || c == '\t'):
			if inTok {
				toks = append(toks, cur.String())
				cur.Reset()
				inTok = false
			}
		default:
			cur.WriteByte(c)
			inTok = true
		}
	}
	if inQuote {
		return nil, errors.New("unterminated quote")
	}
	if inTok {
		toks = append(toks, cur.String())
	}
	return toks, nil
}

// run executes the script in this process.
func (s *script) run(t *testing.T) {
	base := t.TempDir()
	e := &env{
		t:       t,
		s:       s,
		root:    filepath.Join(base, "root"),
		out:     filepath.Join(base, "out"),
		opts:    Options{Recursive: true, Settle: 300 * time.Millisecond},
		handles: map[string]*os.File{},
		sftps:   map[string]*sftpUpload{},
		trees:   map[string][]string{},
		marks:   map[string]int{},
		gate:    &gate{},
		seen:    &seenSet{m: map[string]int{}},
	}
	e.opts.Root = e.root
	for _, d := range []string{e.root, e.out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.sandbox) > 0 {
		e.enterSandbox()
	}
	t.Cleanup(e.cleanup)
	for _, st := range s.steps {
		e.cur = st
		e.exec(st)
	}
	e.finish()
}

// env is a running script.
type env struct {
	t         *testing.T
	s         *script
	cur       step
	root, out string
	opts      Options
	h         hooks
	w         *Watcher
	col       *collector
	handles   map[string]*os.File
	sftps     map[string]*sftpUpload
	trees     map[string][]string // rel folder → files the last tree/deep/burst wrote
	marks     map[string]int
	gate      *gate
	seen      *seenSet // paths of events the loop handled, and "queued:" paths
	finished  bool
}

// seenSet records what the event loop did, for steps that must wait for the
// watcher to have noticed something.
type seenSet struct {
	mu sync.Mutex
	m  map[string]int
}

func (s *seenSet) add(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k]++
}

func (s *seenSet) count(k string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k]
}

func (e *env) fatalf(format string, args ...any) {
	e.t.Helper()
	e.t.Fatalf("%s:%d: %s %s: %s", e.s.file, e.cur.line, e.cur.cmd, strings.Join(e.cur.args, " "), fmt.Sprintf(format, args...))
}

func (e *env) nargs(n int) {
	e.t.Helper()
	if len(e.cur.args) != n {
		e.fatalf("want %d arguments, got %d", n, len(e.cur.args))
	}
}

// path maps a script path to a real one.
func (e *env) path(p string) string {
	switch {
	case p == ".":
		return e.root
	case p == "@out":
		return e.out
	case strings.HasPrefix(p, "@out/"):
		return filepath.Join(e.out, p[len("@out/"):])
	case strings.HasPrefix(p, "@root/"):
		return filepath.Join(e.root, p[len("@root/"):])
	}
	return filepath.Join(e.root, p)
}

func (e *env) duration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		e.fatalf("%v", err)
	}
	return d
}

func (e *env) int(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		e.fatalf("%v", err)
	}
	return n
}

func (e *env) within() time.Duration {
	if v, ok := e.cur.kv["within"]; ok {
		return e.duration(v)
	}
	return defaultWithin
}

func (e *env) check(err error) {
	e.t.Helper()
	if err != nil {
		e.fatalf("%v", err)
	}
}

func (e *env) exec(st step) {
	a := st.args
	switch st.cmd {
	// ---- options, before start ----
	case "settle":
		e.nargs(1)
		e.opts.Settle = e.duration(a[0])
	case "no-recursive":
		e.opts.Recursive = false
	case "include":
		e.opts.Include = append(e.opts.Include, a...)
	case "exclude":
		e.opts.Exclude = append(e.opts.Exclude, a...)
	case "marker":
		e.nargs(1)
		e.opts.ReadyMarker = a[0]
	case "follow-symlinks":
		e.opts.FollowSymlinks = true
	case "skip":
		for _, p := range a {
			e.opts.Skip = append(e.opts.Skip, e.path(p))
		}
	case "no-lease": // force the /proc scan
		e.h.noLease = true
	case "require-root": // require-root WHY: the case only holds with root's view of /proc
		if os.Geteuid() != 0 {
			e.t.Skipf("needs root: %s", strings.Join(a, " "))
		}
	case "start":
		e.start()

	// ---- acting on the file system ----
	case "mkdir":
		for _, p := range a {
			e.check(os.MkdirAll(e.path(p), 0o755))
		}
	case "write":
		e.nargs(2)
		e.check(os.WriteFile(e.path(a[0]), content(e.int(a[1])), 0o644))
	case "append":
		e.nargs(2)
		f, err := os.OpenFile(e.path(a[0]), os.O_WRONLY|os.O_APPEND, 0)
		e.check(err)
		_, err = f.Write(content(e.int(a[1])))
		e.check(err)
		e.check(f.Close())
	case "open": // open H PATH: create for writing and keep it open
		e.nargs(2)
		f, err := os.OpenFile(e.path(a[1]), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		e.check(err)
		e.handles[a[0]] = f
	case "open-read":
		e.nargs(2)
		f, err := os.Open(e.path(a[1]))
		e.check(err)
		e.handles[a[0]] = f
	case "hwrite":
		e.nargs(2)
		_, err := e.handle(a[0]).Write(content(e.int(a[1])))
		e.check(err)
	case "close":
		e.nargs(1)
		e.check(e.handle(a[0]).Close())
		delete(e.handles, a[0])
	case "rename":
		e.nargs(2)
		e.check(os.Rename(e.path(a[0]), e.path(a[1])))
	case "copy": // like cp: create the target, write it in chunks, close
		e.nargs(2)
		e.copy(e.path(a[0]), e.path(a[1]))
	case "link":
		e.nargs(2)
		e.check(os.Link(e.path(a[0]), e.path(a[1])))
	case "symlink": // symlink TARGET LINK; TARGET is used as written unless it starts with @out or @root
		e.nargs(2)
		target := a[0]
		if strings.HasPrefix(target, "@") {
			target = e.path(target)
		}
		e.check(os.Symlink(target, e.path(a[1])))
	case "chmod":
		e.nargs(2)
		mode, err := strconv.ParseUint(a[1], 8, 32)
		e.check(err)
		e.check(os.Chmod(e.path(a[0]), os.FileMode(mode)))
	case "rm":
		for _, p := range a {
			e.check(os.Remove(e.path(p)))
		}
	case "rmrf":
		for _, p := range a {
			e.check(os.RemoveAll(e.path(p)))
		}
	case "mkfifo":
		e.nargs(1)
		e.check(unix.Mkfifo(e.path(a[0]), 0o644))
	case "tree": // tree DIR FOLDERS FILES [prefix=p]: FOLDERS folders under DIR, FILES files in each, all at once
		e.nargs(3)
		e.tree(a[0], e.int(a[1]), e.int(a[2]), st.kv["prefix"])
	case "deep": // deep DIR DEPTH FILES: mkdir -p DIR/l1/.../lDEPTH, then FILES files at each level at once
		e.nargs(3)
		e.deep(a[0], e.int(a[1]), e.int(a[2]))
	case "burst": // burst DIR: more events than the inotify queue holds (use with stall)
		e.nargs(1)
		e.burst(a[0])
	case "sleep": // a pause that is part of the scenario (a writer pausing), never a wait for a result
		e.nargs(1)
		time.Sleep(e.duration(a[0]))
	case "sftp-open": // sftp-open H PATH: sshd's sftp-server opens PATH for writing
		e.nargs(2)
		e.sftpOpen(a[0], e.path(a[1]))
	case "sftp-write":
		e.nargs(2)
		_, err := e.sftp(a[0]).f.Write(content(e.int(a[1])))
		e.check(err)
	case "sftp-close":
		e.nargs(1)
		e.check(e.sftp(a[0]).f.Close())

	// ---- driving the watcher ----
	case "stall": // the event loop stops reading inotify at its next event
		e.gate.close()
	case "unstall":
		e.gate.open()
	case "hold-ready": // the consumer stops receiving from Ready
		e.col.setHold(true)
	case "release-ready":
		e.col.setHold(false)
	case "rescan":
		e.w.Rescan()
	case "mark-seen": // remember how many events the loop handled for PATH so far
		e.nargs(1)
		e.marks[a[0]] = e.seen.count(e.path(a[0]))
	case "wait-seen": // wait until the loop handled an event for PATH since mark-seen
		e.nargs(1)
		e.waitFor(func() bool { return e.seen.count(e.path(a[0])) > e.marks[a[0]] })
	case "wait-queued": // wait until PATH joined the Ready queue (as many times as it was waited for)
		e.nargs(1)
		e.marks["queued:"+a[0]]++
		n := e.marks["queued:"+a[0]]
		e.waitFor(func() bool { return e.seen.count("queued:"+e.path(a[0])) >= n })

	// ---- expectations ----
	case "wait-ready":
		e.nargs(1)
		e.waitReady(a[0])
	case "expect-not-ready":
		e.nargs(2)
		e.expectNotReady(a[0], e.duration(a[1]))
	case "expect-quiet":
		e.nargs(1)
		e.expectNotReady("", e.duration(a[0]))
	case "wait-ready-tree":
		e.nargs(1)
		e.waitTree(a[0])
	case "wait-error":
		e.nargs(1)
		e.waitError(a[0])
	case "expect-no-error":
		e.nargs(1)
		if err := e.col.findError(a[0], "", "", false); err != nil {
			e.fatalf("unexpected error: %v", err)
		}
	default:
		e.fatalf("unknown command")
	}
}

// content returns n bytes of recognisable data.
func content(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

func (e *env) handle(name string) *os.File {
	f := e.handles[name]
	if f == nil {
		e.fatalf("no open handle %q", name)
	}
	return f
}

func (e *env) start() {
	if e.w != nil {
		e.fatalf("already started")
	}
	h := e.h
	h.beforeEvent = e.gate.wait
	h.afterEvent = func(ev fsnotify.Event) { e.seen.add(ev.Name) }
	h.queued = func(f File) { e.seen.add("queued:" + f.Path) }
	w, err := newWatcher(e.opts, h)
	e.check(err)
	// The first scan runs in the watcher's goroutine; the scripts act on
	// the folder once it is over, as they did when New waited for it.
	select {
	case <-w.scanned:
	case <-time.After(defaultWithin):
		e.fatalf("first scan not over after %v", defaultWithin)
	}
	e.w = w
	e.col = newCollector(w)
}

func (e *env) copy(src, dst string) {
	in, err := os.Open(src)
	e.check(err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	e.check(err)
	buf := make([]byte, 4096)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			_, werr := out.Write(buf[:n])
			e.check(werr)
		}
		if err == io.EOF {
			break
		}
		e.check(err)
	}
	e.check(out.Close())
}

func (e *env) tree(dir string, folders, files int, prefix string) {
	if prefix == "" {
		prefix = "f"
	}
	var rels []string
	for i := range folders {
		sub := fmt.Sprintf("%s/d%03d", dir, i)
		e.check(os.MkdirAll(e.path(sub), 0o755))
		for j := range files {
			rel := fmt.Sprintf("%s/%s%03d", sub, prefix, j)
			e.check(os.WriteFile(e.path(rel), content(64), 0o644))
			rels = append(rels, rel)
		}
	}
	e.trees[dir] = rels
}

func (e *env) deep(dir string, depth, files int) {
	levels := make([]string, depth)
	p := dir
	for i := range depth {
		p = fmt.Sprintf("%s/l%d", p, i+1)
		levels[i] = p
	}
	e.check(os.MkdirAll(e.path(p), 0o755))
	var rels []string
	for _, lv := range levels {
		for j := range files {
			rel := fmt.Sprintf("%s/f%d", lv, j)
			e.check(os.WriteFile(e.path(rel), content(64), 0o644))
			rels = append(rels, rel)
		}
	}
	e.trees[dir] = rels
}

// burst writes, round robin over 100 files, more modify events than the
// kernel queue, fsnotify's buffer and its read buffer hold together.
// Consecutive events differ, so the kernel cannot merge them.
func (e *env) burst(dir string) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	e.check(err)
	queue, err := strconv.Atoi(strings.TrimSpace(string(b)))
	e.check(err)
	if queue > 4<<20 {
		e.t.Skipf("fs.inotify.max_queued_events = %d: too large to overflow in a test", queue)
	}
	writes := queue + 2*eventBuffer + 4096
	const nfiles = 100
	fs := make([]*os.File, nfiles)
	var rels []string
	for i := range fs {
		rel := fmt.Sprintf("%s/f%03d", dir, i)
		f, err := os.OpenFile(e.path(rel), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		e.check(err)
		fs[i] = f
		rels = append(rels, rel)
	}
	one := []byte{'x'}
	for i := range writes {
		_, err := fs[i%nfiles].Write(one)
		e.check(err)
	}
	for _, f := range fs {
		e.check(f.Close())
	}
	e.trees[dir] = rels
}

// ---- sshd's sftp-server ----

type sftpUpload struct {
	cmd *exec.Cmd
	c   *sftp.Client
	f   *sftp.File
}

func findSFTPServer() string {
	for _, p := range []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server", "/usr/libexec/sftp-server"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func (e *env) sftpOpen(name, p string) {
	bin := findSFTPServer()
	if bin == "" {
		if os.Getenv(requireSFTPEnv) == "1" {
			e.fatalf("sftp-server not found and %s=1", requireSFTPEnv)
		}
		e.t.Skip("sftp-server (openssh-server) not installed")
	}
	cmd := exec.Command(bin, "-e", "-l", "ERROR")
	stdin, err := cmd.StdinPipe()
	e.check(err)
	stdout, err := cmd.StdoutPipe()
	e.check(err)
	cmd.Stderr = os.Stderr
	e.check(cmd.Start())
	c, err := sftp.NewClientPipe(stdout, stdin)
	e.check(err)
	u := &sftpUpload{cmd: cmd, c: c}
	e.sftps[name] = u
	u.f, err = c.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	e.check(err)
}

func (e *env) sftp(name string) *sftpUpload {
	u := e.sftps[name]
	if u == nil {
		e.fatalf("no sftp upload %q", name)
	}
	return u
}

// ---- expectations ----

func (e *env) waitFor(cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(e.within())
	for !cond() {
		if time.Now().After(deadline) {
			e.fatalf("not done within %s", e.within())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) waitReady(rel string) {
	e.t.Helper()
	deadline := time.Now().Add(e.within())
	for {
		if f, ok := e.col.take(rel); ok {
			e.checkFile(f)
			return
		}
		if time.Now().After(deadline) {
			e.fatalf("not reported within %s; reported so far: %s", e.within(), e.col.summary())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) checkFile(f File) {
	e.t.Helper()
	if want := filepath.Join(e.root, filepath.FromSlash(f.Rel)); f.Path != want {
		e.fatalf("Path = %q, want %q", f.Path, want)
	}
	if f.Inode == 0 || f.ModTime.IsZero() {
		e.fatalf("incomplete File: %+v", f)
	}
	kv := e.cur.kv
	if v, ok := kv["size"]; ok && f.Size != int64(e.int(v)) {
		e.fatalf("Size = %d, want %s (reason %q)", f.Size, v, f.Reason)
	}
	if v, ok := kv["reason"]; ok && !strings.Contains(f.Reason, v) {
		e.fatalf("Reason = %q, want it to contain %q", f.Reason, v)
	}
	wantMarker := ""
	if v, ok := kv["marker"]; ok {
		wantMarker = e.path(v)
	}
	if f.Marker != wantMarker {
		e.fatalf("Marker = %q, want %q", f.Marker, wantMarker)
	}
}

// expectNotReady watches for d that rel ("" for any file) is not reported.
func (e *env) expectNotReady(rel string, d time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if f, ok := e.col.peek(rel); ok {
			e.fatalf("reported: %s (%s)", f.Rel, f.Reason)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) waitTree(dir string) {
	e.t.Helper()
	rels := e.trees[dir]
	if len(rels) == 0 {
		e.fatalf("no tree written under %s", dir)
	}
	deadline := time.Now().Add(e.within())
	for {
		missing := e.col.missing(rels)
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			e.fatalf("%d of %d files not reported within %s, e.g. %s", len(missing), len(rels), e.within(), missing[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	anySize := e.cur.kv["size"] == "any"
	for _, rel := range rels {
		f, _ := e.col.take(rel)
		if !anySize && f.Size != 64 {
			e.fatalf("%s: Size = %d, want 64 (reason %q)", rel, f.Size, f.Reason)
		}
		if g, twice := e.col.peek(rel); twice {
			e.fatalf("%s reported twice (%q, then %q)", rel, f.Reason, g.Reason)
		}
	}
}

func (e *env) waitError(kind string) {
	e.t.Helper()
	text := e.cur.kv["text"]
	p := ""
	if v, ok := e.cur.kv["path"]; ok {
		p = e.path(v)
	}
	deadline := time.Now().Add(e.within())
	for {
		if err := e.col.findError(kind, text, p, true); err != nil {
			return
		}
		if time.Now().After(deadline) {
			e.fatalf("no %s error within %s; errors so far: %v", kind, e.within(), e.col.errorList())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// finish closes the watcher and checks that nothing unexpected was reported
// and that both channels are closed.
func (e *env) finish() {
	e.finished = true
	if e.w == nil {
		return
	}
	e.gate.open()
	e.col.setHold(false)
	if err := e.w.Close(); err != nil {
		e.t.Errorf("Close: %v", err)
	}
	if err := e.w.Close(); err != nil {
		e.t.Errorf("second Close: %v", err)
	}
	select {
	case <-e.col.done:
	case <-time.After(5 * time.Second):
		e.t.Fatalf("Ready and Errors not closed after Close")
	}
	if extra := e.col.unclaimed(); len(extra) > 0 {
		e.t.Errorf("%s: reported but not expected by the script:\n%s", e.s.file, strings.Join(extra, "\n"))
	}
	for _, err := range e.col.errorList() {
		e.t.Logf("watcher error: %v", err)
	}
}

func (e *env) cleanup() {
	e.gate.open()
	for _, f := range e.handles {
		f.Close()
	}
	for _, u := range e.sftps {
		u.c.Close()
		_ = u.cmd.Wait()
	}
	if e.w != nil {
		e.col.setHold(false)
		e.w.Close()
	}
}

// ---- the consumer ----

// collector receives everything the watcher sends, like the agent would.
type collector struct {
	mu      sync.Mutex
	files   []File
	claimed []bool
	errs    []error
	errUsed []bool
	holdCh  chan bool
	done    chan struct{}
}

func newCollector(w *Watcher) *collector {
	c := &collector{holdCh: make(chan bool), done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		held := false
		for {
			if held {
				held = <-c.holdCh
				continue
			}
			select {
			case held = <-c.holdCh:
			case f, ok := <-w.Ready():
				if !ok {
					return
				}
				c.mu.Lock()
				c.files = append(c.files, f)
				c.claimed = append(c.claimed, false)
				c.mu.Unlock()
			}
		}
	}()
	go func() {
		defer wg.Done()
		for err := range w.Errors() {
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.errUsed = append(c.errUsed, false)
			c.mu.Unlock()
		}
	}()
	go func() {
		wg.Wait()
		close(c.done)
	}()
	return c
}

// setHold makes the consumer stop (or resume) receiving from Ready. When it
// returns, the consumer is no longer inside a receive.
func (c *collector) setHold(held bool) {
	select {
	case c.holdCh <- held:
	case <-c.done:
	}
}

func (c *collector) find(rel string) int {
	for i, f := range c.files {
		if !c.claimed[i] && (rel == "" || f.Rel == rel) {
			return i
		}
	}
	return -1
}

// take claims the oldest unclaimed report of rel.
func (c *collector) take(rel string) (File, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.find(rel)
	if i < 0 {
		return File{}, false
	}
	c.claimed[i] = true
	return c.files[i], true
}

func (c *collector) peek(rel string) (File, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := c.find(rel)
	if i < 0 {
		return File{}, false
	}
	return c.files[i], true
}

func (c *collector) missing(rels []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	have := map[string]bool{}
	for i, f := range c.files {
		if !c.claimed[i] {
			have[f.Rel] = true
		}
	}
	var miss []string
	for _, r := range rels {
		if !have[r] {
			miss = append(miss, r)
		}
	}
	return miss
}

func (c *collector) unclaimed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for i, f := range c.files {
		if !c.claimed[i] {
			out = append(out, fmt.Sprintf("  %s size=%d (%s)", f.Rel, f.Size, f.Reason))
		}
	}
	return out
}

func (c *collector) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for i, f := range c.files {
		state := ""
		if c.claimed[i] {
			state = " (claimed)"
		}
		parts = append(parts, fmt.Sprintf("%s size=%d%s", f.Rel, f.Size, state))
		if len(parts) == 20 {
			parts = append(parts, "...")
			break
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// findError returns an error of the named kind (with text in its message
// and for path p, if given), claiming it if claim is set.
func (c *collector) findError(kind, text, p string, claim bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, err := range c.errs {
		var we *Error
		if c.errUsed[i] || !errors.As(err, &we) || we.Kind.String() != kind {
			continue
		}
		if !strings.Contains(err.Error(), text) || (p != "" && we.Path != p) {
			continue
		}
		if claim {
			c.errUsed[i] = true
		}
		return err
	}
	return nil
}

func (c *collector) errorList() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

// gate blocks wait while closed.
type gate struct {
	mu sync.Mutex
	ch chan struct{}
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

func (g *gate) wait() {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// enterSandbox runs in the child: it checks it is where the script needs it.
func (e *env) enterSandbox() {
	if os.Getenv(scriptChildEnv) == "" {
		e.t.Fatalf("sandboxed script run outside its sandbox")
	}
	switch e.s.sandbox[0] {
	case "nobody":
		if os.Geteuid() == 0 {
			e.t.Fatalf("sandbox nobody: still root")
		}
	case "watch-limit":
		if len(e.s.sandbox) != 2 {
			e.t.Fatalf("sandbox watch-limit N")
		}
		if err := os.WriteFile("/proc/sys/user/max_inotify_watches", []byte(e.s.sandbox[1]), 0); err != nil {
			e.t.Fatalf("lowering the namespace's watch limit: %v", err)
		}
	}
}
