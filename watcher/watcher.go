package watcher

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// DefaultSettle is the quiet period used when Options.Settle is zero.
const DefaultSettle = 2 * time.Second

// Sizes of the internal buffers.
const (
	eventBuffer  = 4096 // fsnotify events buffered between its reader and our loop
	errorBuffer  = 64   // Errors channel capacity; further errors are logged and dropped
	maxBatch     = 2048 // files examined per readiness round before events are read again
	procRootPath = "/proc"
)

// Log attribute keys.
const (
	logPath   = "path"
	logReason = "reason"
	logKind   = "kind"
	logErr    = "err"
)

// Options configure a Watcher.
type Options struct {
	// Root is the absolute path of the watched folder. It may itself be a
	// symbolic link.
	Root string
	// Recursive watches the whole tree below Root, including folders created
	// later. Otherwise only files directly in Root are considered.
	Recursive bool
	// Include and Exclude are globs on the slash-separated path relative to
	// Root. A pattern without "/" matches the base name at any depth (like
	// .gitignore); one with "/" is anchored at Root, and an element "**"
	// matches any number of path elements (zero included). *, ? and [...]
	// work as in path.Match. A file is reported if it matches some Include
	// pattern (default ["*"], everything) and no Exclude pattern; a folder
	// matching an Exclude pattern is not entered at all.
	//
	// Always ignored, whatever the patterns say: dotfiles and dot-folders
	// (so .dropship-sent and hidden temporary uploads), and *.part, *.tmp,
	// *.swp, *~, *.filepart, *.crdownload (case-insensitive).
	Include []string
	Exclude []string
	// Settle is the quiet period: a file is ready only once no event touched
	// it for this long. Zero means DefaultSettle.
	Settle time.Duration
	// ReadyMarker, e.g. ".done", switches to marker mode: x is ready only
	// once x.done exists (x itself must also be stable and not open for
	// writing, but need not wait out Settle). Markers are never reported as
	// files; a marker without its file is ignored until the file appears.
	ReadyMarker string
	// FollowSymlinks reports symbolic links to regular files whose target
	// resolves inside Root (and outside Skip folders). A link pointing
	// elsewhere is refused and reported on Errors. Links to folders are never
	// entered: their target is inside Root, so it is watched already at its
	// real path (this also rules out loops). Without FollowSymlinks, links
	// are ignored.
	FollowSymlinks bool
	// Skip lists absolute paths of folders that are never watched nor sent
	// (archive_dir, failed_dir when inside Root). Paths outside Root are
	// ignored.
	Skip []string
	// Logger receives debug records; nil discards them.
	Logger *slog.Logger
}

// File is a file judged ready to send.
type File struct {
	Path    string    // absolute; for a followed symlink, the link itself
	Rel     string    // slash-separated, relative to Root
	Size    int64     // as seen when it was judged ready
	ModTime time.Time // as seen when it was judged ready
	// Dev and Inode identify the inode judged ready (for a followed symlink,
	// the target's). Compare them with what you open (fstat) to be sure you
	// send what was checked.
	Dev, Inode uint64
	// Marker is the absolute path of the ready marker that released the
	// file, "" outside marker mode. Remove or archive it with the file.
	Marker string
	// Reason says why the file was judged ready, for the queued event, e.g.
	// "quiet for 2s, size and mtime stable, no writer", "renamed in, no
	// writer", "marker x.done, size and mtime stable, no writer",
	// "present at start, quiet for 2s, size and mtime stable, no writer".
	Reason string
	// SettleOnly says that no writer check could see this file (no lease,
	// and /proc hid some processes): it was judged ready on the settle
	// period alone, so a writer that paused longer may still have it open.
	// Never set in marker mode, where the marker says it is complete.
	SettleOnly bool
}

// Watcher reports the files of one watched folder that are ready to send.
//
// # Readiness
//
// A file is ready when all of these hold:
//
//   - No inotify event touched it for Settle (for a file found by a scan
//     rather than an event, its ctime stands in for the last event).
//   - Two stats at least a short re-check interval apart (Settle/10, between
//     20ms and 250ms) agree on inode, size, mtime, ctime and mode, with no
//     event in between. A change seen this way counts as activity, so files
//     whose events were lost are still held back.
//   - No process holds it open for writing, where Linux lets us see it: a
//     read lease probe, else one batched scan of /proc/*/fd per readiness
//     round (see the writer check notes below). A file with a writer is
//     checked again every Settle/2 (at most 1s) and is never reported while
//     the writer keeps it open, however long it pauses.
//
// Shortcuts: a file that appeared by a create event (a rename or link into
// the folder) with data, and received no write since, is ready after the
// re-check alone when the writer check can prove nobody has it open for
// writing ("renamed in, no writer"). fsnotify v1.10.1 neither tells
// IN_MOVED_TO from IN_CREATE nor lets us ask for IN_CLOSE_WRITE, hence this
// rule: a file created in place gets write events, which rule it out. In
// marker mode, x is ready after the re-check once x+ReadyMarker exists and
// no writer is seen.
//
// A reported file that changes (size, mtime, inode or permissions) is
// reported again once it is ready again; a rescan never reports a file that
// is unchanged since its last report. A reported file that is still waiting
// in the Ready queue when it changes is taken out of the queue.
//
// # Delivery
//
// Ready is unbuffered and fed by the event loop, which never blocks on it:
// while the consumer is slow, ready files wait in an internal queue that
// holds each path at most once, so it is bounded by the number of files in
// the tree, and the loop keeps draining inotify meanwhile.
//
// # Writer check
//
// The lease probe needs the file's owner or CAP_LEASE; where it is refused,
// /proc shows only the processes we may ptrace: all as root, else our own
// user's, and not even those when they made themselves non-dumpable, as
// sshd's sftp-server does. So in the SFTP-relay deployment (uploads owned by
// the partner's user, dropship running as its own) only CAP_LEASE lets the
// watcher see an upload in progress. When nothing can see, readiness rests
// on Settle alone and a KindWriterCheck error is sent once.
//
// # Never missing a file
//
// Files present at start are scanned (and still pass the readiness checks).
// A new folder is watched and then scanned, so files created in it before
// its watch existed are found. An inotify queue overflow triggers a full
// rescan (KindOverflow). When inotify_add_watch fails with ENOSPC
// (fs.inotify.max_user_watches), a KindWatchLimit error is sent once and
// every folder that could not be watched is polled instead (every Settle,
// between 500ms and 10s), retrying its watch each time. When Root is
// deleted, moved away or replaced (KindRootGone; seen by its event, or by a
// stat of Root every Settle/2, between 50ms and 1s), the watcher looks for
// it at that interval, then watches and scans it again (KindRootBack). A file that cannot be read (permission denied) is reported
// like any other, with "not readable" in its Reason: the consumer's send
// fails and it must retry on its own timer, since the watcher reports the
// file again only when it changes (a chmod counts).
type Watcher struct {
	root    string
	opts    Options
	filter  *filter
	log     *slog.Logger
	fsw     *fsnotify.Watcher
	writers *writerCheck
	hooks   hooks
	t       timing

	ready     chan File
	errs      chan error
	rescanReq chan struct{}
	done      chan struct{}
	exited    chan struct{}
	scanned   chan struct{} // closed when the first scan is over, or stopped by Close
	closeOnce sync.Once
	closeErr  error

	// Everything below is owned by the run goroutine (by New before it
	// starts it).
	realRoot      string
	skip          []string // Skip folders as paths relative to the root
	rootGone      bool
	dirs          map[string]*dirState
	dirIDs        map[devIno]string
	due           dueHeap
	out           outQueue
	links         map[string]map[*fileState]struct{} // target rel → links to it
	refused       map[string]string                  // link path → target refused
	gen           uint64
	unwatched     int
	limitReported bool
	blindReported bool
	lastTick      time.Time
	nextPoll      time.Time
	nextRootCheck time.Time
	rescanAt      time.Time
	more          bool // the last round left due files behind
}

// hooks let tests reach into the event loop.
type hooks struct {
	beforeEvent func()                  // called before each fsnotify event is handled
	afterEvent  func(ev fsnotify.Event) // called after
	queued      func(File)              // called when a file joins the Ready queue
	noLease     bool                    // skip the lease probe, so /proc is scanned
}

// timing holds the intervals derived from Settle.
type timing struct {
	settle        time.Duration
	recheck       time.Duration // gap between two stats that must agree
	fastRecheck   time.Duration // the same for a file renamed in complete
	tick          time.Duration // minimum spacing of readiness rounds
	writerRecheck time.Duration // how often a file held open is looked at again
	rootPoll      time.Duration // how often a missing root is looked for
	dirPoll       time.Duration // how often folders without a watch are listed
}

func newTiming(settle time.Duration) timing {
	recheck := clamp(settle/10, 20*time.Millisecond, 250*time.Millisecond)
	return timing{
		settle:        settle,
		recheck:       recheck,
		fastRecheck:   clamp(settle/40, 10*time.Millisecond, 50*time.Millisecond),
		tick:          clamp(settle/40, 5*time.Millisecond, 50*time.Millisecond),
		writerRecheck: clamp(settle/2, recheck, time.Second),
		rootPoll:      clamp(settle/2, 50*time.Millisecond, time.Second),
		dirPoll:       clamp(settle, 500*time.Millisecond, 10*time.Second),
	}
}

func clamp(d, lo, hi time.Duration) time.Duration {
	return min(max(d, lo), hi)
}

// origin says how a file came to be examined; it prefixes the Reason.
type origin uint8

const (
	originEvent origin = iota
	originStart
	originNewDir
	originRescan
	originPoll
	originRootBack
)

var originPrefix = [...]string{
	originEvent:    "",
	originStart:    "present at start, ",
	originNewDir:   "found in a new folder, ",
	originRescan:   "found by rescan, ",
	originPoll:     "found by polling an unwatched folder, ",
	originRootBack: "found when the root came back, ",
}

// dirState is one folder of the tree.
type dirState struct {
	id         devIno
	watched    bool
	errShown   bool // its watch or listing error was reported
	gen        uint64
	files      map[string]*fileState // by absolute path
	unwatchedQ bool                  // counted in Watcher.unwatched
}

// fileState is what the watcher knows about one file.
type fileState struct {
	path, rel string
	link      bool   // a followed symlink
	linkID    devIno // the link's own inode
	target    string // its target, relative to the root

	origin     origin
	lastEvent  time.Time // last activity seen (event, or change between stats)
	fast       bool      // created by an event and not written since
	needSettle bool      // the renamed-in shortcut was ruled out
	pending    bool      // waiting to be judged ready
	waitMarker bool      // marker mode: its marker is missing

	obs    stamp // last stat and when it was taken
	obsAt  time.Time
	hasObs bool
	cand   stamp // the stat a readiness decision is about

	due     time.Time
	heapIdx int
	queued  *outItem

	reported bool
	rkey     stamp // stat of the last reported version
	gen      uint64
}

// New validates opts and starts the watcher's goroutine, which first watches
// Root (and, if Recursive, every folder below it) and scans the files already
// present, then follows events. Files present at start are queued; they
// still pass the readiness checks. New returns without waiting for that
// first scan, however large the tree: Close stops it between two folder
// entries.
func New(opts Options) (*Watcher, error) {
	return newWatcher(opts, hooks{})
}

func newWatcher(opts Options, h hooks) (*Watcher, error) {
	if !filepath.IsAbs(opts.Root) {
		return nil, fmt.Errorf("watcher: root %q must be an absolute path", opts.Root)
	}
	if opts.Settle < 0 {
		return nil, fmt.Errorf("watcher: settle %s must not be negative", opts.Settle)
	}
	if opts.Settle == 0 {
		opts.Settle = DefaultSettle
	}
	if strings.Contains(opts.ReadyMarker, "/") {
		return nil, fmt.Errorf("watcher: ready marker %q must not contain a slash", opts.ReadyMarker)
	}
	flt, err := newFilter(opts.Include, opts.Exclude, opts.ReadyMarker)
	if err != nil {
		return nil, fmt.Errorf("watcher: %w", err)
	}
	root := filepath.Clean(opts.Root)
	if st, err := os.Stat(root); err != nil {
		return nil, fmt.Errorf("watcher: root %s: %w (create the folder or fix the watch path)", root, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("watcher: root %s is not a folder", root)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("watcher: root %s: %w", root, err)
	}
	fsw, err := fsnotify.NewBufferedWatcher(eventBuffer)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			return nil, fmt.Errorf("watcher: %w: inotify instance limit reached; raise it with sysctl fs.inotify.max_user_instances=1024 (persist it in /etc/sysctl.d/)", err)
		}
		return nil, fmt.Errorf("watcher: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		root:      root,
		opts:      opts,
		filter:    flt,
		log:       log,
		fsw:       fsw,
		writers:   newWriterCheck(!h.noLease),
		hooks:     h,
		t:         newTiming(opts.Settle),
		ready:     make(chan File),
		errs:      make(chan error, errorBuffer),
		rescanReq: make(chan struct{}, 1),
		done:      make(chan struct{}),
		exited:    make(chan struct{}),
		scanned:   make(chan struct{}),
		realRoot:  realRoot,
		dirs:      make(map[string]*dirState),
		dirIDs:    make(map[devIno]string),
		links:     make(map[string]map[*fileState]struct{}),
		refused:   make(map[string]string),
	}
	w.skip = skipRels(root, realRoot, opts.Skip)
	w.nextRootCheck = time.Now().Add(w.t.rootPoll)
	go w.run()
	return w, nil
}

// skipRels turns the Skip folders into paths relative to the root, dropping
// those outside it.
func skipRels(root, realRoot string, skip []string) []string {
	var rels []string
	for _, s := range skip {
		if !filepath.IsAbs(s) {
			continue
		}
		s = filepath.Clean(s)
		if rel, ok := relUnder(root, s); ok && rel != "" {
			rels = append(rels, filepath.ToSlash(rel))
			continue
		}
		real, err := filepath.EvalSymlinks(s)
		if err != nil {
			parent, perr := filepath.EvalSymlinks(filepath.Dir(s))
			if perr != nil {
				continue
			}
			real = filepath.Join(parent, filepath.Base(s))
		}
		if rel, ok := relUnder(realRoot, real); ok && rel != "" {
			rels = append(rels, filepath.ToSlash(rel))
		}
	}
	return rels
}

// Ready returns the channel on which ready files are delivered. It is
// unbuffered; the watcher keeps working while nobody receives. It is closed
// once Close has stopped the watcher.
func (w *Watcher) Ready() <-chan File { return w.ready }

// Errors returns the channel of operational problems that do not stop the
// watcher, each an *Error. It is buffered; when nobody receives and the
// buffer is full, further errors are logged and dropped rather than block.
// Nothing is sent after Close; the channel is closed then.
func (w *Watcher) Errors() <-chan error { return w.errs }

// Rescan asks for a full rescan of the tree (after a reload, say): folders
// without a watch are watched, and every file not reported yet, or changed
// since its report, is examined. Files reported and unchanged are not
// reported again. It does not block; requests made while one is pending are
// merged.
func (w *Watcher) Rescan() {
	select {
	case w.rescanReq <- struct{}{}:
	default:
	}
}

// Close stops the watcher, waits for its goroutines and releases its
// inotify instance. It is safe to call more than once; later calls return
// the first call's result.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		<-w.exited
		w.closeErr = w.fsw.Close()
	})
	return w.closeErr
}

// run is the event loop; it owns all state.
func (w *Watcher) run() {
	defer close(w.exited)
	defer close(w.errs)
	defer close(w.ready)

	w.scanTree(w.root, originStart)
	close(w.scanned)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var timerAt time.Time
	events, fsErrs := w.fsw.Events, w.fsw.Errors
	for {
		now := time.Now()
		if wake, ok := w.nextWake(now); !ok {
			if !timerAt.IsZero() {
				timer.Stop()
				timerAt = time.Time{}
			}
		} else if !wake.Equal(timerAt) {
			timer.Reset(max(wake.Sub(now), 0))
			timerAt = wake
		}

		var out chan<- File
		var file File
		head := w.out.peek()
		if head != nil {
			out, file = w.ready, head.file
		}

		select {
		case <-w.done:
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if w.hooks.beforeEvent != nil {
				w.hooks.beforeEvent()
			}
			w.handleEvent(ev)
			if w.hooks.afterEvent != nil {
				w.hooks.afterEvent(ev)
			}
		case err, ok := <-fsErrs:
			if !ok {
				fsErrs = nil
				continue
			}
			w.handleFsError(err)
		case out <- file:
			w.delivered(head)
		case <-w.rescanReq:
			w.requestRescan(time.Now())
		case <-timer.C:
			timerAt = time.Time{}
			w.tick(time.Now())
		}
	}
}

// nextWake returns when the loop must next run tick, if ever.
func (w *Watcher) nextWake(now time.Time) (time.Time, bool) {
	if w.more {
		return now, true
	}
	var t time.Time
	ok := false
	earliest := func(c time.Time) {
		if !ok || c.Before(t) {
			t, ok = c, true
		}
	}
	if w.due.Len() > 0 {
		earliest(later(w.due[0].due, w.lastTick.Add(w.t.tick)))
	}
	if w.rootGone || w.unwatched > 0 {
		earliest(w.nextPoll)
	}
	if !w.rootGone {
		earliest(w.nextRootCheck)
	}
	if !w.rescanAt.IsZero() {
		earliest(w.rescanAt)
	}
	return t, ok
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// tick runs a readiness round, and polls and rescans when their time came.
func (w *Watcher) tick(now time.Time) {
	w.lastTick = now
	if !w.rescanAt.IsZero() && !now.Before(w.rescanAt) {
		w.rescanAt = time.Time{}
		w.fullRescan(originRescan)
	}
	if !w.rootGone && !now.Before(w.nextRootCheck) {
		w.checkRoot()
	}
	if (w.rootGone || w.unwatched > 0) && !now.Before(w.nextPoll) {
		if w.rootGone {
			w.tryRoot()
		} else {
			w.pollUnwatched()
		}
		w.nextPoll = time.Now().Add(w.pollInterval())
	}

	var cands []*fileState
	for n := 0; w.due.Len() > 0 && n < maxBatch; n++ {
		f := w.due[0]
		if f.due.After(now) {
			break
		}
		w.due.pop()
		if w.evaluate(f, now) {
			cands = append(cands, f)
		}
	}
	w.more = w.due.Len() > 0 && !w.due[0].due.After(now)
	if len(cands) > 0 {
		w.decide(cands, now)
	}
}

func (w *Watcher) pollInterval() time.Duration {
	if w.rootGone {
		return w.t.rootPoll
	}
	return w.t.dirPoll
}

// requestRescan schedules a full rescan shortly, so that a burst of
// overflows or requests costs one walk.
func (w *Watcher) requestRescan(now time.Time) {
	if w.rescanAt.IsZero() {
		w.rescanAt = now.Add(w.t.tick)
	}
}

// report sends an error without ever blocking.
func (w *Watcher) report(e *Error) {
	w.log.Debug("watcher problem", logKind, e.Kind.String(), logPath, e.Path, logErr, e)
	select {
	case w.errs <- e:
	default:
		w.log.Warn("watcher error dropped: nobody reads Errors", logKind, e.Kind.String(), logErr, e)
	}
}

func (w *Watcher) handleFsError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.report(&Error{Kind: KindOverflow, Path: w.root,
			Msg: "inotify event queue overflowed and events were lost; rescanning the whole folder (if this repeats, raise fs.inotify.max_queued_events with sysctl)",
			Err: err})
		w.requestRescan(time.Now())
		return
	}
	w.report(&Error{Kind: KindInternal, Path: w.root, Msg: "inotify", Err: err})
}

// ---- paths ----

// relUnder returns p relative to root, if p is root or inside it.
func relUnder(root, p string) (string, bool) {
	if p == root {
		return "", true
	}
	prefix := root
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if strings.HasPrefix(p, prefix) {
		return p[len(prefix):], true
	}
	return "", false
}

func join(dir, name string) string {
	if strings.HasSuffix(dir, "/") {
		return dir + name
	}
	return dir + "/" + name
}

func joinRel(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}

func parentOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func (w *Watcher) isSkipped(rel string) bool {
	for _, s := range w.skip {
		if rel == s || strings.HasPrefix(rel, s+"/") {
			return true
		}
	}
	return false
}

func (w *Watcher) wantDir(rel string) bool {
	return !w.isSkipped(rel) && w.filter.wantDir(rel)
}

// ---- events ----

func (w *Watcher) handleEvent(ev fsnotify.Event) {
	name := ev.Name
	if name == w.root {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			w.rootLost()
		}
		return
	}
	if w.rootGone {
		return
	}
	rel, ok := relUnder(w.root, name)
	if !ok || rel == "" || ignoredName(path.Base(rel)) {
		return
	}
	now := time.Now()
	switch {
	case ev.Has(fsnotify.Create):
		w.created(name, rel, now)
	case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
		w.removed(name, rel, now)
	case ev.Has(fsnotify.Write), ev.Has(fsnotify.Chmod):
		w.modified(name, rel, ev.Has(fsnotify.Write), now)
	}
}

// created handles a new directory entry: a file, folder or link created,
// renamed or linked in. Events may be stale (a backlog behind a rescan), so
// what is on disk now decides: an entry we already know with the same inode
// is only touched, never treated as new.
func (w *Watcher) created(p, rel string, now time.Time) {
	st, err := lstatStamp(p)
	if err != nil {
		return // already gone; its removal event follows
	}
	if d, known := w.dirs[p]; known && (!st.isDir() || d.id != st.id()) {
		w.forgetTree(p)
	}
	fresh := true
	if f := w.fileAt(p); f != nil {
		if f.knows(st) {
			fresh = false
		} else {
			w.forgetFile(f) // replaced: a new inode is a new file
		}
	}
	w.log.Debug("entry created", logPath, p, "inode", st.ino, "size", st.size, "new", fresh)
	switch {
	case w.filter.isMarker(rel) && !st.isDir():
		w.markerSeen(p, rel, originEvent)
	case st.isDir():
		if w.opts.Recursive && w.wantDir(rel) {
			if _, known := w.dirs[p]; !known {
				w.scanTree(p, originNewDir)
			}
		}
	case st.isSymlink():
		if fresh {
			w.considerLink(p, rel, originEvent)
		} else if f := w.fileAt(p); f != nil {
			w.touch(f, now, false, false)
		}
	case st.isRegular():
		if w.filter.wantFile(rel) {
			if f := w.track(p, rel); f != nil {
				w.touch(f, now, fresh, false)
			}
		}
	}
	w.targetChanged(rel, now)
}

// knows reports whether st is the inode this state is about (for a followed
// link, the link itself).
func (f *fileState) knows(st stamp) bool {
	id := st.id()
	if f.link {
		return st.isSymlink() && f.linkID == id
	}
	if !st.isRegular() {
		return false
	}
	return (f.hasObs && f.obs.id() == id) || (f.reported && f.rkey.id() == id) || (f.queued != nil && f.queued.st.id() == id)
}

// removed handles an entry deleted or renamed away. A stale event for a path
// that exists again is handled as its creation instead.
func (w *Watcher) removed(p, rel string, now time.Time) {
	if st, err := lstatStamp(p); err == nil {
		if _, known := w.dirs[p]; known && st.isDir() {
			// The folder we watched is gone (its watch with it); this
			// is another one, possibly with the freed inode number of
			// the old, so the inode cannot tell them apart. Watch and
			// scan it afresh.
			w.forgetTree(p)
		}
		w.created(p, rel, now)
		return
	}
	if _, ok := w.dirs[p]; ok {
		w.forgetTree(p)
	}
	if f := w.fileAt(p); f != nil {
		w.forgetFile(f)
	}
	delete(w.refused, p)
	if w.filter.isMarker(rel) {
		w.markerGone(p)
	}
	w.targetChanged(rel, now)
}

func (w *Watcher) modified(p, rel string, wrote bool, now time.Time) {
	if d, ok := w.dirs[p]; ok {
		if d.unwatchedQ { // say, its permissions were just fixed
			w.gen++
			for _, sub := range w.scanDir(p, originPoll) {
				if _, known := w.dirs[sub]; !known {
					w.scanTree(sub, originPoll)
				}
			}
		}
		return
	}
	if w.filter.isMarker(rel) {
		w.markerSeen(p, rel, originEvent)
		return
	}
	f := w.fileAt(p)
	if f == nil {
		if !w.filter.wantFile(rel) {
			w.targetChanged(rel, now)
			return
		}
		if f = w.track(p, rel); f == nil {
			return
		}
	}
	w.touch(f, now, false, wrote)
	w.targetChanged(rel, now)
}

// touch records activity on a file and schedules a look at it.
func (w *Watcher) touch(f *fileState, now time.Time, created, wrote bool) {
	f.lastEvent = now
	f.origin = originEvent
	if created {
		f.fast, f.needSettle, f.hasObs = true, false, false
		// The first of the two agreeing stats, taken now: a file renamed
		// in complete then needs only one short recheck.
		if st, err := w.observe(f); err == nil && st.isRegular() {
			f.obs, f.obsAt, f.hasObs = st, now, true
		}
	}
	if wrote {
		f.fast = false
	}
	if f.queued != nil {
		w.out.cancel(f.queued)
		f.queued = nil
	}
	f.pending = true
	w.schedule(f, now.Add(w.quiet(f)))
}

// targetChanged passes activity on a file to the followed links to it.
func (w *Watcher) targetChanged(rel string, now time.Time) {
	for f := range w.links[rel] {
		w.touch(f, now, false, true)
	}
}

// ---- markers ----

func (w *Watcher) markerTarget(markerPath string) (string, string, bool) {
	p := strings.TrimSuffix(markerPath, w.opts.ReadyMarker)
	rel, ok := relUnder(w.root, p)
	if !ok || rel == "" || !w.filter.wantFile(rel) {
		return "", "", false
	}
	return p, rel, true
}

// markerSeen handles a marker that appeared: its file, if present, is
// examined now.
func (w *Watcher) markerSeen(markerPath, _ string, o origin) {
	p, rel, ok := w.markerTarget(markerPath)
	if !ok {
		return
	}
	if f := w.fileAt(p); f != nil {
		if f.queued == nil {
			// Looked at now; if it was reported, it is reported again
			// only if it changed.
			f.pending, f.waitMarker = true, false
			w.schedule(f, time.Now())
		}
		return
	}
	st, err := lstatStamp(p)
	if err != nil || !st.isRegular() {
		return
	}
	if f := w.track(p, rel); f != nil {
		w.pendFromScan(f, st, o)
	}
}

// markerGone takes a file whose marker disappeared out of the queue.
func (w *Watcher) markerGone(markerPath string) {
	p, _, ok := w.markerTarget(markerPath)
	if !ok {
		return
	}
	if f := w.fileAt(p); f != nil && f.queued != nil {
		w.out.cancel(f.queued)
		f.queued = nil
		f.pending = true
		w.schedule(f, time.Now())
	}
}

// ---- symlinks ----

var errRefused = errors.New("symlink target outside the watched root")

// considerLink tracks a followed symlink to a regular file inside the root.
func (w *Watcher) considerLink(p, rel string, o origin) {
	if !w.opts.FollowSymlinks || !w.filter.wantFile(rel) {
		return
	}
	target, err := filepath.EvalSymlinks(p)
	if err != nil {
		w.log.Debug("ignoring dangling symlink", logPath, p, logErr, err)
		return
	}
	trel, inside := relUnder(w.realRoot, target)
	if !inside || trel == "" || w.isSkipped(trel) {
		w.refuse(p, target)
		return
	}
	st, err := statStamp(target)
	if err != nil || !st.isRegular() {
		return // links to folders are not entered; other types are not sent
	}
	lst, err := lstatStamp(p)
	if err != nil {
		return
	}
	f := w.fileAt(p)
	if f != nil && (!f.link || f.linkID != lst.id()) {
		w.forgetFile(f)
		f = nil
	}
	if f == nil {
		if f = w.track(p, rel); f == nil {
			return
		}
		f.link, f.linkID = true, lst.id()
	}
	w.setLinkTarget(f, trel)
	f.gen = w.gen
	if f.pending || f.queued != nil || (f.reported && f.rkey.sameContent(st)) {
		return
	}
	w.pendFromScan(f, st, o)
}

func (w *Watcher) setLinkTarget(f *fileState, trel string) {
	if f.target == trel {
		return
	}
	w.dropLinkTarget(f)
	f.target = trel
	if w.links[trel] == nil {
		w.links[trel] = make(map[*fileState]struct{})
	}
	w.links[trel][f] = struct{}{}
}

func (w *Watcher) dropLinkTarget(f *fileState) {
	if set := w.links[f.target]; set != nil {
		delete(set, f)
		if len(set) == 0 {
			delete(w.links, f.target)
		}
	}
	f.target = ""
}

func (w *Watcher) refuse(p, target string) {
	if f := w.fileAt(p); f != nil {
		w.forgetFile(f)
	}
	if w.refused[p] == target {
		return
	}
	w.refused[p] = target
	w.report(&Error{Kind: KindSymlinkOutside, Path: p,
		Msg: fmt.Sprintf("symbolic link points to %s, outside the watched folder or into a skipped one; it is not sent (copy the file in instead)", target),
		Err: errRefused})
}

// ---- tracking ----

func (w *Watcher) fileAt(p string) *fileState {
	d := w.dirs[parentOf(p)]
	if d == nil {
		return nil
	}
	return d.files[p]
}

// track starts tracking a file in a known folder; nil if the folder is not
// known (not watched nor scanned).
func (w *Watcher) track(p, rel string) *fileState {
	d := w.dirs[parentOf(p)]
	if d == nil {
		return nil
	}
	if f := d.files[p]; f != nil {
		return f
	}
	f := &fileState{path: p, rel: rel, heapIdx: -1, gen: w.gen}
	if d.files == nil {
		d.files = make(map[string]*fileState)
	}
	d.files[p] = f
	return f
}

func (w *Watcher) forgetFile(f *fileState) {
	if f.heapIdx >= 0 {
		w.due.remove(f)
	}
	if f.queued != nil {
		w.out.cancel(f.queued)
		f.queued = nil
	}
	if f.link {
		w.dropLinkTarget(f)
	}
	f.pending = false
	if d := w.dirs[parentOf(f.path)]; d != nil && d.files[f.path] == f {
		delete(d.files, f.path)
	}
}

// forgetTree drops a folder and everything below it, watches included.
func (w *Watcher) forgetTree(dir string) {
	prefix := dir + "/"
	for p, d := range w.dirs {
		if p != dir && !strings.HasPrefix(p, prefix) {
			continue
		}
		for _, f := range d.files {
			w.forgetFile(f)
		}
		if d.watched {
			_ = w.fsw.Remove(p) // the kernel may have dropped it already
		}
		w.setWatched(d, false, false)
		if w.dirIDs[d.id] == p {
			delete(w.dirIDs, d.id)
		}
		delete(w.dirs, p)
	}
	for p := range w.refused {
		if strings.HasPrefix(p, prefix) {
			delete(w.refused, p)
		}
	}
}

func (w *Watcher) setWatched(d *dirState, watched, counted bool) {
	d.watched = watched
	if counted != d.unwatchedQ {
		d.unwatchedQ = counted
		if counted {
			w.unwatched++
			if w.unwatched == 1 {
				w.nextPoll = time.Now().Add(w.t.dirPoll)
			}
		} else {
			w.unwatched--
		}
	}
}

// ---- scanning ----

// closing reports whether Close was called: long scans stop then.
func (w *Watcher) closing() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// scanTree watches and scans dir and, if recursive, every folder below it.
// It stops early once Close was called.
func (w *Watcher) scanTree(dir string, o origin) {
	w.gen++
	stack := []string{dir}
	for len(stack) > 0 && !w.closing() {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		stack = append(stack, w.scanDir(d, o)...)
	}
}

// scanDir watches one folder, then lists it: files are examined, and the
// subfolders to enter are returned. Watching first means a file created
// meanwhile is seen by the scan or by an event, or both.
func (w *Watcher) scanDir(dir string, o origin) []string {
	isRoot := dir == w.root
	var st stamp
	var err error
	if isRoot {
		st, err = statStamp(dir)
	} else {
		st, err = lstatStamp(dir)
	}
	if err != nil || !st.isDir() {
		if isRoot {
			w.rootLost()
		} else if _, known := w.dirs[dir]; known {
			w.forgetTree(dir)
		}
		return nil
	}
	if other, ok := w.dirIDs[st.id()]; ok && other != dir {
		if ost, err := lstatStamp(other); err == nil && ost.id() == st.id() {
			w.log.Debug("folder already watched under another path", logPath, dir, "other", other)
			return nil // a bind mount of a folder we have: never twice
		}
		w.forgetTree(other)
	}
	d := w.dirs[dir]
	if d != nil && d.id != st.id() {
		w.forgetTree(dir)
		d = nil
	}
	if d == nil {
		d = &dirState{id: st.id()}
		w.dirs[dir] = d
		w.dirIDs[d.id] = dir
	}
	d.gen = w.gen
	w.watchDir(dir, d, isRoot)
	if w.dirs[dir] != d {
		return nil // vanished or replaced meanwhile
	}

	entries, err := readDir(dir, isRoot, w.done)
	if errors.Is(err, errClosing) {
		return nil
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			if isRoot {
				w.rootLost()
			} else {
				w.forgetTree(dir)
			}
			return nil
		}
		if !d.errShown {
			d.errShown = true
			w.report(&Error{Kind: KindUnreadableDir, Path: dir,
				Msg: fmt.Sprintf("cannot list folder; it is tried again every %s (fix its permissions)", w.t.dirPoll),
				Err: err})
		}
		w.setWatched(d, d.watched, true) // polled until it can be listed
		return nil
	}
	if d.watched {
		d.errShown = false
	}

	rel, _ := relUnder(w.root, dir)
	var subdirs []string
	for i, e := range entries {
		if i%256 == 255 && w.closing() {
			return nil // not listed to the end: forget nothing
		}
		name := e.Name()
		if ignoredName(name) {
			continue
		}
		p, crel := join(dir, name), joinRel(rel, name)
		t := e.Type()
		switch {
		case w.filter.isMarker(crel) && !t.IsDir():
			w.markerSeen(p, crel, o)
		case t.IsDir():
			if w.opts.Recursive && w.wantDir(crel) {
				subdirs = append(subdirs, p)
			}
		case t&fs.ModeSymlink != 0:
			w.considerLink(p, crel, o)
		case t.IsRegular():
			w.foundFile(p, crel, o)
		}
	}
	for _, f := range d.files {
		if f.gen != w.gen {
			w.forgetFile(f) // no longer listed: deleted while unwatched
		}
	}
	return subdirs
}

// watchDir adds an inotify watch for one folder.
func (w *Watcher) watchDir(dir string, d *dirState, isRoot bool) {
	if !d.watched {
		// fsnotify v1.10.1 keeps a watch by path until the kernel's
		// IN_IGNORED for it is read. If a folder is deleted and created
		// again before that, Add reuses the old entry for the new watch
		// descriptor, and the late IN_IGNORED then drops the new watch:
		// the new folder's events are lost. Forget any entry for this
		// path first; the kernel already removed the old watch.
		_ = w.fsw.Remove(dir)
	}
	err := w.fsw.Add(dir)
	if err == nil && !isRoot {
		// inotify follows symlinks: make sure we watch what we stat'ed.
		if st, serr := lstatStamp(dir); serr != nil || st.id() != d.id {
			_ = w.fsw.Remove(dir)
			err = fs.ErrNotExist
		}
	}
	if err == nil {
		w.setWatched(d, true, false)
		return
	}
	w.setWatched(d, false, !errors.Is(err, fs.ErrNotExist))
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fsnotify.ErrClosed):
	case errors.Is(err, unix.ENOSPC):
		if !w.limitReported {
			w.limitReported = true
			w.report(&Error{Kind: KindWatchLimit, Path: dir,
				Msg: fmt.Sprintf("inotify watch limit reached (fs.inotify.max_user_watches = %s); this folder and any other that cannot be watched is polled every %s instead. Raise the limit, e.g. sysctl fs.inotify.max_user_watches=524288, and persist it in /etc/sysctl.d/",
					readSysctl("fs/inotify/max_user_watches"), w.t.dirPoll),
				Err: err})
		}
	default:
		if !d.errShown {
			d.errShown = true
			w.report(&Error{Kind: KindUnreadableDir, Path: dir,
				Msg: fmt.Sprintf("cannot watch folder; it is polled every %s instead (fix its permissions)", w.t.dirPoll),
				Err: err})
		}
	}
}

func readSysctl(name string) string {
	b, err := os.ReadFile(procRootPath + "/sys/" + name)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// readDir lists a folder without following a symlink put in its place
// (except for the root, which may be one).
func readDir(dir string, follow bool, stop <-chan struct{}) ([]os.DirEntry, error) {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Open(dir, flags, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	var all []os.DirEntry
	for {
		select {
		case <-stop:
			return nil, errClosing
		default:
		}
		entries, err := f.ReadDir(dirChunk)
		all = append(all, entries...)
		if errors.Is(err, io.EOF) {
			return all, nil
		}
		if err != nil {
			return all, err
		}
	}
}

// dirChunk is how many entries readDir reads at once, between two looks at
// whether the watcher is closing.
const dirChunk = 4096

// errClosing stops a listing when the watcher is closing.
var errClosing = errors.New("watcher closing")

// foundFile examines a regular file found by listing a folder.
func (w *Watcher) foundFile(p, rel string, o origin) {
	if !w.filter.wantFile(rel) {
		return
	}
	f := w.fileAt(p)
	if f != nil {
		f.gen = w.gen
		if f.link {
			w.forgetFile(f)
			f = nil
		} else if f.pending || f.queued != nil {
			return // on its way already
		}
	}
	st, err := lstatStamp(p)
	if err != nil || !st.isRegular() {
		return
	}
	if f == nil {
		if f = w.track(p, rel); f == nil {
			return
		}
	}
	f.gen = w.gen
	if f.reported && f.rkey.sameContent(st) {
		return
	}
	w.pendFromScan(f, st, o)
}

// pendFromScan queues a file found by a scan; its ctime stands in for the
// time of the last event.
func (w *Watcher) pendFromScan(f *fileState, st stamp, o origin) {
	now := time.Now()
	age := min(max(time.Since(time.Unix(0, st.ctime)), 0), w.t.settle)
	f.origin = o
	f.lastEvent = now.Add(-age)
	f.fast, f.needSettle = false, false
	f.obs, f.obsAt, f.hasObs = st, now, true
	f.pending = true
	w.schedule(f, later(f.lastEvent.Add(w.quiet(f)), now.Add(w.t.recheck)))
}

// fullRescan walks the whole tree again.
func (w *Watcher) fullRescan(o origin) {
	if w.rootGone {
		w.tryRoot()
		return
	}
	w.scanTree(w.root, o)
	if w.rootGone {
		return
	}
	for p, d := range w.dirs {
		if d.gen != w.gen {
			if _, still := w.dirs[p]; still {
				w.forgetTree(p)
			}
		}
	}
}

// pollUnwatched lists the folders that have no watch.
func (w *Watcher) pollUnwatched() {
	w.gen++
	var list []string
	for p, d := range w.dirs {
		if d.unwatchedQ {
			list = append(list, p)
		}
	}
	for _, p := range list {
		if w.dirs[p] == nil {
			continue
		}
		for _, sub := range w.scanDir(p, originPoll) {
			if _, known := w.dirs[sub]; !known {
				w.scanTree(sub, originPoll)
			}
		}
	}
	if w.unwatched == 0 && w.limitReported {
		w.limitReported = false
		w.log.Info("every folder is watched again", logPath, w.root)
	}
}

// ---- the root ----

func (w *Watcher) rootLost() {
	if w.rootGone {
		return
	}
	w.rootGone = true
	for p, d := range w.dirs {
		for _, f := range d.files {
			w.forgetFile(f)
		}
		if d.watched {
			_ = w.fsw.Remove(p)
		}
	}
	w.dirs = make(map[string]*dirState)
	w.dirIDs = make(map[devIno]string)
	w.links = make(map[string]map[*fileState]struct{})
	w.refused = make(map[string]string)
	w.unwatched = 0
	w.limitReported = false
	w.nextPoll = time.Now().Add(w.t.rootPoll)
	w.report(&Error{Kind: KindRootGone, Path: w.root,
		Msg: fmt.Sprintf("watched folder was deleted or moved away; looking for it every %s (recreate it to resume)", w.t.rootPoll),
		Err: errRootMissing})
}

// checkRoot notices a root that vanished or was replaced without an event
// for it (its parent renamed, events lost); a replaced root is watched again
// at once.
func (w *Watcher) checkRoot() {
	w.nextRootCheck = time.Now().Add(w.t.rootPoll)
	d := w.dirs[w.root]
	st, err := statStamp(w.root)
	if err == nil && st.isDir() && d != nil && d.id == st.id() {
		return
	}
	w.rootLost()
	w.tryRoot()
}

func (w *Watcher) tryRoot() {
	st, err := statStamp(w.root)
	if err != nil || !st.isDir() {
		return
	}
	if real, err := filepath.EvalSymlinks(w.root); err == nil {
		w.realRoot = real
	}
	w.rootGone = false
	w.nextRootCheck = time.Now().Add(w.t.rootPoll)
	w.scanTree(w.root, originRootBack)
	if w.rootGone {
		return
	}
	w.report(&Error{Kind: KindRootBack, Path: w.root, Msg: "watched folder is back; watching and scanning it again"})
}

// ---- readiness ----

// quiet is how long a file must go without activity before it is looked at.
func (w *Watcher) quiet(f *fileState) time.Duration {
	if f.fast && !f.needSettle {
		return w.t.fastRecheck
	}
	if w.opts.ReadyMarker != "" {
		return w.t.recheck
	}
	return w.t.settle
}

// recheckOf is the gap between the two stats that must agree: short for a
// file that arrived complete by a rename (it is still proven writer-free
// before it is reported), settle/10 otherwise.
func (w *Watcher) recheckOf(f *fileState) time.Duration {
	if f.fast && !f.needSettle {
		return w.t.fastRecheck
	}
	return w.t.recheck
}

func (w *Watcher) schedule(f *fileState, t time.Time) {
	if f.heapIdx >= 0 {
		if t.Before(f.due) {
			f.due = t
			w.due.fix(f)
		}
		return
	}
	f.due = t
	w.due.push(f)
}

// observe stats a file (for a followed link, re-resolving it).
func (w *Watcher) observe(f *fileState) (stamp, error) {
	if !f.link {
		return lstatStamp(f.path)
	}
	target, err := filepath.EvalSymlinks(f.path)
	if err != nil {
		return stamp{}, err
	}
	trel, inside := relUnder(w.realRoot, target)
	if !inside || trel == "" || w.isSkipped(trel) {
		w.refuse(f.path, target)
		return stamp{}, errRefused
	}
	w.setLinkTarget(f, trel)
	return statStamp(target)
}

// evaluate is the first half of a readiness round for one due file: quiet
// period, marker, and two agreeing stats. It returns true if the file is a
// candidate for the writer check.
func (w *Watcher) evaluate(f *fileState, now time.Time) bool {
	if !f.pending {
		return false
	}
	if q := f.lastEvent.Add(w.quiet(f)); q.After(now) {
		w.schedule(f, q)
		return false
	}
	cur, err := w.observe(f)
	if err != nil {
		if errors.Is(err, errRefused) {
			return false
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			w.forgetFile(f)
			return false
		}
		w.schedule(f, now.Add(w.t.writerRecheck)) // EACCES on a parent, EIO: keep trying
		return false
	}
	if !cur.isRegular() {
		w.forgetFile(f)
		if cur.isSymlink() {
			w.considerLink(f.path, f.rel, originEvent)
		}
		return false
	}
	if w.opts.ReadyMarker != "" {
		if _, err := lstatStamp(f.path + w.opts.ReadyMarker); err != nil {
			f.waitMarker, f.hasObs = true, false
			return false // until the marker's event, or a rescan
		}
		f.waitMarker = false
	}
	if !f.hasObs || f.obsAt.Before(f.lastEvent) {
		f.obs, f.obsAt, f.hasObs = cur, now, true
		w.schedule(f, now.Add(w.recheckOf(f)))
		return false
	}
	if cur != f.obs {
		// Changed without an event we saw (lost events, an unwatched
		// folder, a write through another link): that is activity too.
		if cur.size != f.obs.size || cur.mtime != f.obs.mtime || cur.ino != f.obs.ino {
			f.fast = false
		}
		f.lastEvent = now
		f.obs, f.obsAt = cur, now
		w.schedule(f, now.Add(w.quiet(f)))
		return false
	}
	if next := f.obsAt.Add(w.recheckOf(f)); next.After(now) {
		w.schedule(f, next)
		return false
	}
	if f.reported && f.rkey.sameContent(cur) {
		f.pending = false // unchanged since it was reported
		w.log.Debug("unchanged since it was reported", logPath, f.path, "inode", cur.ino)
		return false
	}
	f.cand = cur
	return true
}

// decide is the second half of a readiness round: one writer check for all
// candidates, then each is reported or looked at again later.
func (w *Watcher) decide(cands []*fileState, now time.Time) {
	qs := make([]writerQuery, len(cands))
	for i, f := range cands {
		p := f.path
		if f.link {
			p = join(w.realRoot, f.target)
		}
		qs[i] = writerQuery{path: p, id: f.cand.id()}
	}
	res := w.writers.check(qs, now)
	for i, f := range cands {
		r := res[i]
		if r.deferred {
			w.schedule(f, w.writers.nextProc)
			continue
		}
		w.noteBlind(f, r)
		if r.state == writerOpen {
			w.log.Debug("open for writing; looked at again later", logPath, f.path, "inode", f.cand.ino)
			f.needSettle = true
			w.schedule(f, now.Add(w.t.writerRecheck))
			continue
		}
		var reason, marker string
		switch {
		case w.opts.ReadyMarker != "":
			marker = f.path + w.opts.ReadyMarker
			reason = fmt.Sprintf("%smarker %s, size and mtime stable, %s", originPrefix[f.origin], path.Base(marker), writerNote(r))
		case f.fast && !f.needSettle && f.cand.size > 0 && r.state == writerNone:
			reason = "renamed in, no writer"
		default:
			if f.fast && !f.needSettle {
				f.needSettle = true // not provably complete: wait out settle
				if q := f.lastEvent.Add(w.t.settle); q.After(now) {
					w.schedule(f, q)
					continue
				}
			}
			reason = fmt.Sprintf("%squiet for %s, size and mtime stable, %s", originPrefix[f.origin], w.t.settle, writerNote(r))
		}
		if r.unreadable {
			reason += "; not readable: permission denied"
		}
		w.enqueue(f, File{
			Path:    f.path,
			Rel:     f.rel,
			Size:    f.cand.size,
			ModTime: f.cand.modTime(),
			Dev:     f.cand.dev,
			Inode:   f.cand.ino,
			Marker:  marker,
			Reason:  reason,
			// In marker mode the marker, not settle, says it is complete.
			SettleOnly: marker == "" && (r.state == writerUnknown || r.state == writerNoneSeen),
		})
	}
}

func writerNote(r writerResult) string {
	switch r.state {
	case writerNone:
		return "no writer"
	case writerNoneSeen:
		return fmt.Sprintf("no writer seen (%d processes not visible)", r.hidden)
	default:
		return "writer check unavailable"
	}
}

// noteBlind reports, once, that writers cannot be seen for some files.
func (w *Watcher) noteBlind(f *fileState, r writerResult) {
	if w.blindReported || (r.state != writerUnknown && r.state != writerNoneSeen) {
		return
	}
	w.blindReported = true
	cause := "file leases are not available on this file system"
	switch {
	case r.unreadable:
		cause = "the file cannot be opened for reading"
	case r.leaseDenied:
		cause = "the kernel refused a read lease: not the file's owner and no CAP_LEASE"
	}
	hidden := "/proc cannot be read"
	if r.hidden > 0 {
		hidden = fmt.Sprintf("/proc hides the open files of %d processes", r.hidden)
	}
	w.report(&Error{Kind: KindWriterCheck, Path: f.path,
		Msg: fmt.Sprintf("cannot tell whether files are still open for writing (%s, and %s); for such files readiness rests on the settle period alone, so a writer pausing longer than settle may be sent early. Run dropship as the uploading user or grant it CAP_LEASE (systemd: AmbientCapabilities=CAP_LEASE)", cause, hidden)})
}

func (w *Watcher) enqueue(f *fileState, file File) {
	f.pending = false
	it := &outItem{f: f, file: file, st: f.cand}
	f.queued = it
	w.out.push(it)
	w.log.Debug("file ready", logPath, file.Path, "inode", file.Inode, logReason, file.Reason)
	if w.hooks.queued != nil {
		w.hooks.queued(file)
	}
}

// delivered records that the consumer received it.
func (w *Watcher) delivered(it *outItem) {
	w.out.pop()
	f := it.f
	f.queued = nil
	f.reported = true
	f.rkey = it.st
}
