package transfer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"
)

const (
	// filesInFlight is how many files one SFTP session works on at once:
	// their opens, writes, closes and renames overlap, so a file does not
	// wait for the round trips of the one before it.
	filesInFlight = 256
	// chunkSize is what is read from a local file, hashed and written as
	// maxPacket requests, all in flight together (see writePieces).
	chunkSize = 256 << 10
	// sessionBudget bounds the file data one session holds in memory: read
	// from local files and not yet acknowledged by the server. With
	// `connections` sessions a target holds at most connections ×
	// sessionBudget of file data, whatever the batch.
	sessionBudget = 16 << 20
	// progressEvery is the shortest time between two progress reports of a
	// file: short enough that `dropship events` draws a bar within half a
	// second of the bytes (with its 100 ms redraw).
	progressEvery = 200 * time.Millisecond
	// meterThreshold is the size from which a file's upload reports
	// progress.
	meterThreshold = 256 << 10
	// statvfsMin is the size from which the server's free space is asked
	// before a file is sent (where it offers statvfs@openssh.com): a
	// smaller file that does not fit fails at its write just as well.
	statvfsMin = 1 << 20
	// stripeMin is the size from which a file is written over several SFTP
	// sessions (OpenSSH channels) at once, stripeWidth of them: one
	// channel's window (2 MiB in OpenSSH) caps one stream at about 2 MiB
	// per round trip, so far away a big file goes faster over several.
	stripeMin   = 16 << 20
	stripeWidth = 4
	// stripeMinRTT is the shortest round trip (the fastest answer the
	// session had) at which a big file is striped: one channel carries at
	// most its window per round trip, 400 MB/s at 5 ms, more than this
	// agent sends through one connection anyway. Nearer than that the extra
	// sessions only cost CPU: on loopback a striped 1 GiB file took about
	// 40 % more CPU, most of it in the server's sshd, for the same bytes.
	stripeMinRTT = 5 * time.Millisecond
)

// Item is one file to upload.
type Item struct {
	// ID names the item in results and observer calls; it is also part of
	// the temporary remote name, so it must be stable across retries of the
	// same file (a retry then overwrites what a failed attempt left).
	ID string
	// File is the local file, opened and checked by the caller. The engine
	// reads this descriptor only (with pread, from offset 0), never a path:
	// what is sent is the file that was checked, whatever happens to its
	// name meanwhile. The caller closes it after Upload returns.
	File *os.File
	// Local is the file's path, for messages only.
	Local string
	// RemoteDir is the target's folder (remote_dir): absolute, or relative
	// to the login directory. It must exist.
	RemoteDir string
	// Rel is the slash-separated path below RemoteDir; folders in it are
	// created when missing. Any byte but NUL and "/" may be in its names.
	Rel string
	// Size is the file's size as the caller checked it: exactly this many
	// bytes are sent, and a file whose size or times change before its
	// rename fails with ClassLocalChanged.
	Size int64
}

// RemotePath is where the item ends up on the server.
func (it Item) RemotePath() string { return RemotePath(it.RemoteDir, it.Rel) }

// TempPath is the name the item is written under before the rename: a dot file
// in the same folder, so the rename is atomic and watchers ignore it. It
// depends on the ID only, so every attempt of a transfer uses the same one.
func (it Item) TempPath() string {
	return path.Join(path.Dir(it.RemotePath()), ".dropship-"+shortID(it.ID)+".part")
}

// RemotePath is where the file rel below remoteDir lands: the one rule for
// remote paths, used by the engine and by everything that reports them.
func RemotePath(remoteDir, rel string) string { return path.Join(remoteDir, rel) }

// shortID keeps temporary names short: a 255-byte file name must still leave
// room for them.
func shortID(id string) string {
	var b strings.Builder
	for _, c := range id {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteRune(c)
		}
		if b.Len() >= 36 {
			break
		}
	}
	if b.Len() == 0 {
		return "x"
	}
	return b.String()
}

// checkItem refuses what cannot be sent as asked: no descriptor, or a Rel that
// would leave RemoteDir or that no server can hold.
func checkItem(it Item) error {
	if it.File == nil {
		return &Error{Class: ClassLocalFile, Message: fmt.Sprintf("%s: no open file to send", it.Local), ExitCode: -1}
	}
	bad := func(why string) error {
		return &Error{Class: ClassBadName, Message: fmt.Sprintf("%q %s", it.Rel, why), ExitCode: -1}
	}
	if it.Rel == "" || strings.HasPrefix(it.Rel, "/") {
		return bad("is not a relative path")
	}
	if strings.IndexByte(it.Rel, 0) >= 0 {
		return bad("contains a NUL byte")
	}
	for _, name := range strings.Split(it.Rel, "/") {
		switch {
		case name == "" || name == "." || name == "..":
			return bad("has an empty, \".\" or \"..\" component")
		case len(name) > 255:
			return bad("has a name longer than 255 bytes")
		}
	}
	return nil
}

// Upload sends items through one SFTP session of the target and returns one
// Result per item, in order. Many files are in flight at once; each is written
// under its temporary name, checked unchanged on its descriptor, and renamed
// into place. Items are independent: one that fails (a bad name, a changed
// local file, a refused write) fails alone. When the session itself fails
// (the connection dropped, a stall, a refused login), files that had not begun
// come back with Began false and the session's error; files that had begun
// fail with it, and their temporary files are removed when the server can
// still be reached.
func (c *Client) Upload(ctx context.Context, items []Item, obs Observer) []Result {
	results := make([]Result, len(items))
	var todo []int
	for i, it := range items {
		results[i] = Result{ID: it.ID, ExitCode: -1}
		if err := checkItem(it); err != nil {
			results[i].Err = err
			continue
		}
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return results
	}
	if c.speakSCP() {
		return c.uploadViaSCP(ctx, items, results, todo, obs)
	}
	release, slot, err := c.acquire(ctx)
	if err != nil {
		return failAll(results, err)
	}
	s, m, err := c.open(ctx, slot)
	if err != nil {
		release()
		if c.fallBack(m, err) {
			return c.uploadViaSCP(ctx, items, results, todo, obs)
		}
		return failAll(results, err)
	}
	c.choseSFTP(m)
	u := &uploadRun{c: c, m: m, s: s, ctx: ctx, items: items, res: results, obs: obs, extra: map[*sftpConn]bool{}}
	s.sink.Store(&u.lineSink)
	u.run(ctx, todo)
	s.sink.Store(nil)
	if !s.alive() {
		c.dropSession(slot, s)
	}
	release()
	u.cleanup(ctx)
	return results
}

// cleanup removes the temporary files that failed files left because their
// session ended before it could remove them, in a session of its own (the
// connection is opened again if it was lost). Files whose rename the session
// ended before answering are looked up first: those the server renamed are
// delivered. Not after a refused login or
// host key: that would be one more refused login. A canceled upload (the
// agent is stopping) does not wait for it: the next attempt of the same
// transfer writes the same temporary name anew.
func (u *uploadRun) cleanup(ctx context.Context) {
	if ctx.Err() != nil || !u.c.opts.Atomic {
		return
	}
	var todo []int
	for i, r := range u.res {
		if r.Began && r.Err != nil && !u.discarded[i].Load() && !u.kept[i].Load() {
			if c := ClassOf(r.Err); loginClass(c) || c == ClassCanceled {
				return
			}
			todo = append(todo, i)
		}
	}
	if len(todo) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, u.c.t.ConnectTimeout+loginSlack)
	defer cancel()
	// A rename the session ended before answering may have been done: the
	// file is then delivered (its temporary name is gone, its final name
	// holds its size), and is reported so, not sent again.
	var unsure []Item
	var unsureIdx []int
	for _, i := range todo {
		if u.unsure[i].Load() {
			unsure = append(unsure, u.items[i])
			unsureIdx = append(unsureIdx, i)
		}
	}
	delivered := map[int]bool{}
	if len(unsure) > 0 {
		done, err := u.c.renamed(cctx, unsure)
		if err != nil {
			u.c.logger.Warn("could not learn whether the renames of a lost connection were done; they are sent again", "files", len(unsure), "err", err)
		}
		for k, ok := range done {
			if ok {
				i := unsureIdx[k]
				delivered[i] = true
				u.res[i].Err = nil
				u.res[i].ExitCode = 0
				u.res[i].SHA256 = u.sums[i]
			}
		}
	}
	var left []Item
	for _, i := range todo {
		if !delivered[i] {
			left = append(left, u.items[i])
		}
	}
	if len(left) == 0 {
		return
	}
	if err := u.c.Discard(cctx, left); err != nil {
		u.c.logger.Warn("could not remove the temporary files of a failed upload; the next attempt overwrites them", "files", len(left), "err", err)
	}
}

// loginClass says whether c is a refused login: repeating it soon only
// repeats the refusal at the server (and may lock the account).
func loginClass(c Class) bool {
	return c == ClassAuth || c == ClassPrompt || c.Security()
}

// failAll gives every item that has no result yet the error err.
func failAll(results []Result, err error) []Result {
	for i := range results {
		if results[i].Err == nil {
			results[i].Err = err
		}
	}
	return results
}

// uploadRun is one Upload call at work.
type uploadRun struct {
	c     *Client
	m     *master // the shared connection the session goes through
	s     *sftpConn
	items []Item
	res   []Result

	obsMu    sync.Mutex // observer calls are serialized
	obs      Observer
	current  atomic.Int64 // an item in flight, for lines ssh prints
	meter    bool         // the batch reports progress
	lineSink func(string)

	ctx     context.Context
	extraMu sync.Mutex
	extra   map[*sftpConn]bool // sessions opened for striping, for the watchdog

	stopped   atomic.Pointer[Error] // set once no new file may begin
	discarded []atomic.Bool         // the item's temporary file was removed
	kept      []atomic.Bool         // the item's temporary file is left to resume from
	// unsure marks items whose rename was sent but never answered (the
	// session ended): the server may have done it. sums holds their sha256.
	unsure []atomic.Bool
	sums   []string
}

func (u *uploadRun) run(ctx context.Context, todo []int) {
	u.lineSink = func(line string) {
		if u.obs.Line == nil {
			return
		}
		u.obsMu.Lock()
		defer u.obsMu.Unlock()
		u.obs.Line(u.items[u.current.Load()].ID, line)
	}
	u.current.Store(int64(todo[0]))
	for _, i := range todo {
		u.meter = u.meter || u.items[i].Size >= meterThreshold
	}
	u.discarded = make([]atomic.Bool, len(u.items))
	u.kept = make([]atomic.Bool, len(u.items))
	u.unsure = make([]atomic.Bool, len(u.items))
	u.sums = make([]string, len(u.items))
	var total int64
	for _, i := range todo {
		total += u.items[i].Size
	}
	deadline := time.Now().Add(deadlineBase + time.Duration(total/deadlineRate)*time.Second)
	watchDone := make(chan struct{})
	stopWatch := make(chan struct{})
	go func() {
		defer close(watchDone)
		u.watchdog(ctx, deadline, stopWatch)
	}()

	next := make(chan int)
	var wg sync.WaitGroup
	for range min(len(todo), filesInFlight) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				u.one(i)
			}
		}()
	}
	for _, i := range todo {
		next <- i
	}
	close(next)
	wg.Wait()
	close(stopWatch)
	<-watchDone
}

// watchdog ends the session when ctx ends, the overall deadline passes, or
// requests have waited stall_timeout without any answer from the server.
func (u *uploadRun) watchdog(ctx context.Context, deadline time.Time, stop <-chan struct{}) {
	stall := u.c.t.StallTimeout
	tick := time.Second
	if stall > 0 && stall/4 < tick {
		tick = max(stall/4, 10*time.Millisecond)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-u.s.done:
			return
		case <-ctx.Done():
			u.killAll(ClassCanceled, "the transfer was stopped: "+context.Cause(ctx).Error())
			return
		case now := <-t.C:
			if now.After(deadline) {
				u.killAll(ClassStalled, "the overall deadline passed")
				return
			}
			if stall > 0 && u.idleFor(now) > stall {
				u.killAll(ClassStalled, fmt.Sprintf("no answer from the server for %s", stall))
				return
			}
		}
	}
}

// killAll ends the session and those opened for striping.
func (u *uploadRun) killAll(class Class, msg string) {
	u.extraMu.Lock()
	for s := range u.extra {
		s.kill(class, msg)
	}
	u.extraMu.Unlock()
	u.s.kill(class, msg)
}

// idleFor is the longest any of the upload's sessions has waited for an
// answer.
func (u *uploadRun) idleFor(now time.Time) time.Duration {
	d := u.s.idleFor(now)
	u.extraMu.Lock()
	for s := range u.extra {
		d = max(d, s.idleFor(now))
	}
	u.extraMu.Unlock()
	return d
}

// one sends item i and records its result.
func (u *uploadRun) one(i int) {
	r := &u.res[i]
	if e := u.stopped.Load(); e != nil {
		r.Err = e
		return
	}
	if !u.s.alive() {
		r.Err = u.sessionErr()
		return
	}
	r.Start = time.Now()
	sum, err := u.send(i, r)
	r.End = time.Now()
	if err == nil {
		r.SHA256 = sum
		r.ExitCode = 0
		return
	}
	var te *Error
	if !errors.As(err, &te) {
		te = &Error{Class: ClassUnknown, Message: err.Error(), ExitCode: -1}
	}
	r.Err = te
	if te.Class.TargetWide() || !u.s.alive() {
		// Every file would fail the same way: start no more.
		u.stopped.CompareAndSwap(nil, te)
	}
}

// begin reports that item i's upload starts.
func (u *uploadRun) begin(i int, r *Result) {
	r.Began = true
	u.current.Store(int64(i))
	if u.obs.Begin != nil {
		u.obsMu.Lock()
		u.obs.Begin(u.items[i].ID)
		u.obsMu.Unlock()
	}
}

// send writes item i under its temporary name and renames it into place. It
// returns the sha256 of the bytes sent, read from the item's descriptor in the
// same pass that sent them.
func (u *uploadRun) send(i int, r *Result) (string, error) {
	it := u.items[i]
	s := u.s
	final := it.RemotePath()
	dst := final
	if u.c.opts.Atomic {
		dst = it.TempPath()
	}
	before, err := statFile(it.File)
	if err != nil {
		return "", &Error{Class: ClassLocalFile, Message: fmt.Sprintf("stat %s: %v", it.Local, err), ExitCode: -1}
	}
	if !before.regular || before.size != it.Size {
		return "", localChanged(it, "it is no longer the file that was checked (size or type changed)")
	}
	if err := u.c.remoteDirs(s, it.RemoteDir, path.Dir(final)); err != nil {
		return "", err
	}
	// The checks that may refuse the file run together (on a distant
	// server each costs a round trip), and before anything is opened.
	var checks sync.WaitGroup
	var refusal atomic.Pointer[Error]
	refuse := func(e *Error) { refusal.CompareAndSwap(nil, e) }
	if s.statvfs && it.Size >= statvfsMin {
		checks.Go(func() {
			var st *sftp.StatVFS
			err := s.do(func() (err error) { st, err = s.client.StatVFS(path.Dir(final)); return })
			switch {
			case err == nil && st.Frsize > 0 && st.FreeSpace() < uint64(it.Size):
				refuse(&Error{Class: ClassRemoteFull, Message: fmt.Sprintf("the server has %d bytes free in %q, less than the %d bytes of %s; nothing was sent", st.FreeSpace(), path.Dir(final), it.Size, it.Local), ExitCode: -1})
			case err != nil && isConnErr(err):
				refuse(u.sessionErr())
			}
		})
	}
	if !u.c.opts.Overwrite {
		checks.Go(func() {
			var fi os.FileInfo
			err := s.do(func() (err error) { fi, err = s.client.Lstat(final); return })
			switch {
			case err == nil && fi != nil:
				refuse(&Error{Class: ClassRemoteExists, Message: fmt.Sprintf("%q already exists on the server and overwrite = false; nothing was sent", final), ExitCode: -1})
			case err != nil && isConnErr(err):
				refuse(u.sessionErr())
			}
		})
	}

	checks.Wait()
	if e := refusal.Load(); e != nil {
		return "", e
	}
	u.begin(i, r)
	from, h, done := u.resumePoint(i, before, dst)
	flags := os.O_WRONLY | os.O_CREATE
	if from == 0 {
		flags |= os.O_TRUNC
	}
	var f *sftp.File
	openErr := s.do(func() (err error) { f, err = s.client.OpenFile(dst, flags); return })
	if openErr != nil {
		return "", u.remoteErr("open", dst, openErr)
	}
	lanes := []lane{{s, f}}
	if it.Size >= stripeMin && s.minRTT() >= u.c.stripeRTT {
		extra := u.stripe(dst, stripeWidth-1)
		lanes = append(lanes, extra...)
		defer u.unstripe(extra)
	}
	cp := u.newCheckpointer(it, before, dst, from, done)
	sum, werr := u.write(i, lanes, from, h, done, cp)
	for _, l := range lanes[1:] {
		// Every write was acknowledged; the main handle's fsync and
		// close then cover the whole file.
		if err := l.s.do(l.f.Close); err != nil && werr == nil {
			werr = u.laneErr(l, "close", dst, err)
		}
	}
	if werr == nil && s.fsync {
		if err := s.do(f.Sync); err != nil {
			werr = u.remoteErr("fsync", dst, err)
		}
	}
	if err := s.do(f.Close); err != nil && werr == nil {
		werr = u.remoteErr("close", dst, err)
	}
	if werr == nil {
		after, err := statFile(it.File)
		switch {
		case err != nil:
			werr = &Error{Class: ClassLocalFile, Message: fmt.Sprintf("stat %s: %v", it.Local, err), ExitCode: -1}
		case after != before:
			werr = localChanged(it, "it changed while it was being sent (size, mtime or ctime)")
		}
	}
	// Interrupted while writing: what the server acknowledged stays
	// under the temporary name for the next attempt (see resume.go).
	keep := werr != nil && cp.resumable(werr)
	if werr == nil && u.c.opts.Preserve {
		u.preserve(it, dst)
	}
	if werr == nil && u.c.opts.Atomic {
		werr = u.rename(dst, final)
		if werr != nil && !s.alive() {
			u.sums[i] = sum
			u.unsure[i].Store(true)
		}
	}
	switch {
	case werr == nil:
		if cp != nil {
			u.c.dropCheckpoint(final)
		}
		return sum, nil
	case keep:
		u.kept[i].Store(true)
	default:
		if u.c.opts.Atomic && u.discard(dst) {
			u.discarded[i].Store(true)
			u.c.dropCheckpoint(final)
		}
	}
	return "", werr
}

// preserve gives the remote file the local file's mtime and mode, where the
// server allows it: many refuse SETSTAT, and delivery never depends on it.
func (u *uploadRun) preserve(it Item, dst string) {
	fi, err := it.File.Stat()
	if err != nil {
		return
	}
	s := u.s
	if err := s.do(func() error { return s.client.Chtimes(dst, fi.ModTime(), fi.ModTime()) }); err != nil {
		u.c.logger.Debug("the server refused to set the file's times (preserve)", "path", dst, "err", err)
	}
	if err := s.do(func() error { return s.client.Chmod(dst, fi.Mode().Perm()) }); err != nil {
		u.c.logger.Debug("the server refused to set the file's mode (preserve)", "path", dst, "err", err)
	}
}

// write sends the item's bytes to f: chunks read in order (and hashed in that
// order), written with many requests in flight, within the session's memory
// budget. Progress counts acknowledged bytes only.
//
// The upload starts at offset from, h holding the sha256 state of the bytes
// before it, and skips the ranges done that the server holds already (0, a
// new hash and none unless resumed); cp, when not nil, records checkpoints
// to resume from.
func (u *uploadRun) write(i int, lanes []lane, from int64, h hash.Hash, done [][2]int64, cp *checkpointer) (string, error) {
	it := u.items[i]
	s := u.s
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
		acked    atomic.Int64
	)
	setErr := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	failed := func() bool {
		errMu.Lock()
		defer errMu.Unlock()
		return firstErr != nil
	}
	acked.Store(from)
	start := time.Now()
	prog := u.progress(it, start)
	for off := from; off < it.Size && !failed(); {
		n := min(int64(chunkSize), it.Size-off)
		if held(done, off, n) {
			// Resumed: the server holds these bytes; they are only
			// read, for the hash.
		} else if err := u.c.throttle(u.ctx, int(n)); err != nil {
			setErr(&Error{Class: ClassCanceled, Message: "the upload was stopped", ExitCode: -1})
			break
		}
		if !u.c.budget.acquire(n, s.done) {
			setErr(u.sessionErr())
			break
		}
		buf := getChunk(int(n))
		if _, err := it.File.ReadAt(buf, off); err != nil {
			putChunk(buf)
			u.c.budget.release(n)
			if errors.Is(err, io.EOF) {
				setErr(localChanged(it, "it became shorter while it was being sent"))
			} else {
				setErr(&Error{Class: ClassLocalFile, Message: fmt.Sprintf("read %s: %v", it.Local, err), ExitCode: -1})
			}
			break
		}
		h.Write(buf)
		cp.read(off+n, h)
		if held(done, off, n) {
			putChunk(buf)
			u.c.budget.release(n)
			acked.Add(n)
			off += n
			continue
		}
		l := lanes[int(off/chunkSize)%len(lanes)]
		wg.Add(1)
		go func(buf []byte, off int64) {
			defer wg.Done()
			err := l.s.do(func() error {
				return writePieces(l.f, buf, off, func(n int) { prog(acked.Add(int64(n)), false) })
			})
			n := int64(len(buf))
			putChunk(buf)
			u.c.budget.release(n)
			if err != nil {
				setErr(u.laneErr(l, "write", l.f.Name(), err))
				return
			}
			cp.ack(off, n)
		}(buf, off)
		off += n
	}
	wg.Wait()
	if firstErr != nil {
		return "", firstErr
	}
	prog(acked.Load(), true)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// lane is one session and its handle of the file being written.
type lane struct {
	s *sftpConn
	f *sftp.File
}

// laneErr is the error of a request on lane l.
func (u *uploadRun) laneErr(l lane, op, p string, err error) *Error {
	if l.s != u.s && (isConnErr(err) || !l.s.alive()) {
		return l.s.failureOr(ClassLostConnection, "an SFTP session of a striped upload ended")
	}
	return u.remoteErr(op, p, err)
}

// stripe opens up to n more SFTP sessions through the shared connection, each
// with a handle of the (already created) file dst, for a big file's writes to
// share. A session that cannot be had is done without: striping only speeds
// the file up.
func (u *uploadRun) stripe(dst string, n int) []lane {
	if u.m == nil {
		return nil
	}
	var lanes []lane
	for range n {
		s, err := dialSFTP(u.ctx, u.c, u.m.sock, nil)
		if err != nil {
			u.c.logger.Debug("striping: no more SFTP sessions", "err", err)
			break
		}
		var f *sftp.File
		if err := s.do(func() (err error) { f, err = s.client.OpenFile(dst, os.O_WRONLY); return }); err != nil {
			s.close()
			break
		}
		u.extraMu.Lock()
		u.extra[s] = true
		u.extraMu.Unlock()
		lanes = append(lanes, lane{s, f})
	}
	return lanes
}

// unstripe ends the sessions stripe opened.
func (u *uploadRun) unstripe(lanes []lane) {
	var wg sync.WaitGroup
	for _, l := range lanes {
		u.extraMu.Lock()
		delete(u.extra, l.s)
		u.extraMu.Unlock()
		wg.Go(l.s.close)
	}
	wg.Wait()
}

// progress returns the function that reports item it's acknowledged bytes
// (see progressReporter).
func (u *uploadRun) progress(it Item, start time.Time) func(acked int64, final bool) {
	return progressReporter(it, start, u.obs.Progress, u.meter, &u.obsMu)
}

// progressReporter returns the function that reports it's bytes (as the
// engine counts them: acknowledged for SFTP, handed to ssh for scp) to
// report: at most every progressEvery, and once at the end. Only in a batch
// with a file of meterThreshold or more (meter): a batch of small files is
// done before a report would be read. obsMu serializes the observer calls.
func progressReporter(it Item, start time.Time, report func(string, Progress), meter bool, obsMu *sync.Mutex) func(n int64, final bool) {
	if report == nil || !meter {
		return func(int64, bool) {}
	}
	var mu sync.Mutex
	var last time.Time
	return func(n int64, final bool) {
		mu.Lock()
		now := time.Now()
		if !final && now.Sub(last) < progressEvery {
			mu.Unlock()
			return
		}
		last = now
		mu.Unlock()
		p := Progress{Bytes: n, Final: final}
		if it.Size > 0 {
			p.Percent = int(n * 100 / it.Size)
		}
		if el := now.Sub(start).Seconds(); el > 0 {
			p.BytesPerSecond = float64(n) / el
			if rate := p.BytesPerSecond; rate > 0 && !final {
				p.ETA = time.Duration(float64(it.Size-n) / rate * float64(time.Second))
			}
		}
		obsMu.Lock()
		report(it.ID, p)
		obsMu.Unlock()
	}
}

// rename moves the temporary file to its final name: posix-rename where the
// server offers it (an atomic replace); otherwise a plain rename, which SFTP
// servers refuse over an existing file, so with overwrite the old file is
// removed first. Without overwrite a plain rename is always used: it never
// replaces a file that appeared meanwhile.
func (u *uploadRun) rename(tmp, final string) error {
	s := u.s
	if !u.c.opts.Overwrite {
		err := s.do(func() error { return s.client.Rename(tmp, final) })
		if err == nil {
			return nil
		}
		if isConnErr(err) {
			return u.sessionErr()
		}
		var fi os.FileInfo
		if s.do(func() (err error) { fi, err = s.client.Lstat(final); return }) == nil && fi != nil {
			return &Error{Class: ClassRemoteExists, Message: fmt.Sprintf("%q already exists on the server and overwrite = false; it was not replaced", final), ExitCode: -1}
		}
		return u.remoteErr("rename", final, err)
	}
	if s.posixRename {
		if err := s.do(func() error { return s.client.PosixRename(tmp, final) }); err != nil {
			return u.remoteErr("rename", final, err)
		}
		return nil
	}
	err := s.do(func() error { return s.client.Rename(tmp, final) })
	if err == nil {
		return nil
	}
	if isConnErr(err) {
		return u.sessionErr()
	}
	if rerr := s.do(func() error { return s.client.Remove(final) }); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return u.remoteErr("rename", final, err)
	}
	if err := s.do(func() error { return s.client.Rename(tmp, final) }); err != nil {
		return u.remoteErr("rename", final, err)
	}
	return nil
}

// discard removes a temporary file of a failed upload, when the session can
// still reach the server, and reports whether it is gone. Best effort: a retry of the same transfer writes
// the same temporary name anew, and Client.Discard removes what is left of a
// transfer that failed for good.
func (u *uploadRun) discard(tmp string) bool {
	if !u.s.alive() {
		return false
	}
	err := u.s.do(func() error { return u.s.client.Remove(tmp) })
	return err == nil || errors.Is(err, os.ErrNotExist)
}

// sessionErr is the error of files that could not go on because the session
// ended.
func (u *uploadRun) sessionErr() *Error {
	// ssh has printed why (or is about to): give it a moment.
	select {
	case <-u.s.done:
	case <-time.After(2 * time.Second):
	}
	u.s.mu.Lock()
	own := u.s.failure
	u.s.mu.Unlock()
	if own != nil {
		return own
	}
	// A session ends with its connection: the master says why.
	if u.m != nil {
		select {
		case <-u.m.done:
			var te *Error
			switch {
			case errors.As(u.m.err, &te) && te.Class == ClassUnknown:
				// It said nothing that tells why (killed, say):
				// to the files, the connection was lost.
				return &Error{Class: ClassLostConnection, Message: "the shared connection ended: " + te.Message, ExitCode: te.ExitCode}
			case te != nil && te.Class != ClassCanceled:
				return te
			}
		case <-time.After(time.Second):
		}
	}
	return u.s.failureOr(ClassLostConnection, "the SFTP session ended")
}

// remoteErr turns a failed SFTP request into an *Error.
func (u *uploadRun) remoteErr(op, p string, err error) *Error {
	if isConnErr(err) || !u.s.alive() {
		return u.sessionErr()
	}
	return requestErr(op, p, err)
}

// requestErr classifies the server's answer to one request.
func requestErr(op, p string, err error) *Error {
	var se *sftp.StatusError
	msg := fmt.Sprintf("%s %q: %v", op, p, err)
	switch {
	case errors.Is(err, os.ErrPermission):
		return &Error{Class: ClassRemotePermission, Message: fmt.Sprintf("%s %q: Permission denied (the server refused the write; check the permissions of remote_dir for the target's user)", op, p), ExitCode: -1}
	case errors.Is(err, os.ErrNotExist):
		return &Error{Class: ClassRemotePath, Message: fmt.Sprintf("%s %q: No such file or directory (check remote_dir)", op, p), ExitCode: -1}
	case errors.As(err, &se) && se.Code == 4 && (op == "write" || op == "close" || op == "fsync"):
		// SSH_FX_FAILURE on a write: OpenSSH's sftp-server says only
		// "Failure" for ENOSPC and EDQUOT.
		return &Error{Class: ClassRemoteFull, Message: fmt.Sprintf("%s remote %q: Failure (the server failed the write: full disk or quota)", op, p), ExitCode: -1}
	case errors.As(err, &se) && se.Code == 8:
		return &Error{Class: ClassRemoteConfig, Message: msg + " (the server does not support this operation)", ExitCode: -1}
	}
	return &Error{Class: ClassUnknown, Message: msg, ExitCode: -1}
}

// localChanged is the failure of a file whose descriptor no longer matches
// what was checked.
func localChanged(it Item, why string) *Error {
	return &Error{Class: ClassLocalChanged, Message: fmt.Sprintf("%s: %s; nothing was delivered under its final name, and it is sent again once it is stable", it.Local, why), ExitCode: -1}
}

// fileState is what must not change on a descriptor between the start of a
// file's upload and its rename.
type fileState struct {
	regular      bool
	size         int64
	mtime, ctime syscall.Timespec
	dev, ino     uint64
}

func statFile(f *os.File) (fileState, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return fileState{}, err
	}
	return fileState{
		regular: st.Mode&syscall.S_IFMT == syscall.S_IFREG,
		size:    st.Size,
		mtime:   st.Mtim,
		ctime:   st.Ctim,
		dev:     uint64(st.Dev),
		ino:     st.Ino,
	}, nil
}

var chunks = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// getChunk returns a buffer of n bytes: a pooled full chunk, or for the
// last piece of a file (and small files) one of its own size, so that the
// memory a file holds is what the budget charged for it.
func getChunk(n int) []byte {
	if n != chunkSize {
		return make([]byte, n)
	}
	b := *(chunks.Get().(*[]byte))
	return b[:n]
}

func putChunk(b []byte) {
	if cap(b) == chunkSize {
		b = b[:chunkSize]
		chunks.Put(&b)
	}
}

// budget is a byte semaphore: the file data a client may hold at once.
type budget struct {
	mu   sync.Mutex
	cond *sync.Cond
	free int64
}

func newBudget(n int64) *budget {
	b := &budget{free: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// acquire takes n bytes, waiting while they are not free; false when done
// closed first.
func (b *budget) acquire(n int64, done <-chan struct{}) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.free < n {
		select {
		case <-done:
			return false
		default:
		}
		b.waitOrDone(done)
	}
	b.free -= n
	return true
}

// waitOrDone waits for a release, or at most a little while so that done is
// looked at again. Called with b.mu.
func (b *budget) waitOrDone(done <-chan struct{}) {
	t := time.AfterFunc(100*time.Millisecond, b.cond.Broadcast)
	defer t.Stop()
	select {
	case <-done:
		return
	default:
	}
	b.cond.Wait()
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
	b.cond.Broadcast()
}
