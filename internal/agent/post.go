package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dropship/dropship/internal/access"
	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
)

// identity is what tells one version of a file from another.
type identity struct {
	size       int64
	mtime      time.Time
	dev, inode uint64
}

func identityOf(fi fs.FileInfo) identity {
	id := identity{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.inode = uint64(st.Dev), st.Ino
	}
	return id
}

// postProcess archives, deletes or keeps files whose delivery is confirmed
// (state sent), per their watch's `after`. It runs only after the completed
// event and the sent state are in the journal, so a crash in between
// finishes the job at the next start instead of sending again.
func (a *Agent) postProcess(jobs []*job) {
	keys := make([]string, len(jobs))
	for i, j := range jobs {
		keys[i] = j.rec.Key
	}
	a.finish(keys)
}

// finish post-processes the records with the given keys: sent files per
// `after`, files failed for good into failed_dir. What fails is tried again
// by the periodic sweep, with backoff (see postFailed).
func (a *Agent) finish(keys []string) {
	var ops []journal.Op
	for _, key := range keys {
		a.mu.Lock()
		rec := a.recs[key]
		var w *config.Watch
		if rec != nil {
			w = a.watchFor(rec.Watch)
		}
		a.mu.Unlock()
		if rec == nil || w == nil {
			a.postDone(key, nil)
			continue
		}
		var op *journal.Op
		var err error
		what := postOperation(rec, w)
		switch rec.State {
		case journal.Sent:
			op, err = a.afterSent(rec, w)
		case journal.Failed:
			op, err = a.afterFailed(rec, w)
		default:
			a.postDone(key, nil)
			continue
		}
		if err != nil {
			if ev := a.postFailed(rec, w, what, err); ev != nil {
				ops = append(ops, *ev)
			}
			continue
		}
		a.postDone(key, rec)
		if op != nil {
			ops = append(ops, *op)
		}
	}
	a.commit(ops...)
}

// The operations of post-processing, as post-failed events and status name
// them (error.class).
const (
	postArchive   = "archive"
	postDelete    = "delete"
	postFailedDir = "failed-dir"
)

// postOperation names what post-processing does to rec.
func postOperation(rec *journal.Record, w *config.Watch) string {
	switch {
	case rec.State == journal.Failed:
		return postFailedDir
	case w.After == config.AfterDelete:
		return postDelete
	default:
		return postArchive
	}
}

// postFailure is a file whose archive, delete or move to failed_dir failed:
// it stays where it is, and is tried again with backoff (the target's
// retry_backoff, doubling up to retry_backoff_max), not at every sweep. It
// is kept in memory only: after a restart, the first failure is reported
// again.
type postFailure struct {
	ID, Path, Watch, Target string
	Op                      string // postArchive, postDelete or postFailedDir
	Err                     string
	cause                   string // the innermost error, which says whether it is still the same failure
	Attempts                int
	Since, Next             time.Time
}

// postFailed records a failed post-processing of rec, schedules the next
// try, and returns the post-failed event to journal: for the first failure
// of this transfer, and again when the error changes, not at every try.
func (a *Agent) postFailed(rec *journal.Record, w *config.Watch, what string, err error) *journal.Op {
	msg := postMessage(err)
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	pf := a.postFails[rec.Key]
	first := pf == nil || pf.ID != rec.ID
	if first {
		pf = &postFailure{ID: rec.ID, Path: rec.Path, Watch: rec.Watch, Target: rec.Target, Since: now}
		a.postFails[rec.Key] = pf
	}
	// Not the message: it may name a new archive name at every try.
	cause := rootCause(err)
	changed := first || pf.cause != cause || pf.Op != what
	pf.Op, pf.Err, pf.cause = what, msg, cause
	pf.Attempts++
	base, ceiling := 5*time.Second, 5*time.Minute
	t := a.targets[rec.Target]
	if t != nil {
		base, ceiling = t.cfg.RetryBackoff, t.cfg.RetryBackoffMax
	}
	pf.Next = now.Add(backoff(base, ceiling, pf.Attempts))
	a.postq = append(a.postq, rec.Key)
	a.metrics.postFailure(rec.Watch, what)
	if !changed {
		a.logger.Warn("post-processing failed again; will try again later", keyTransferID, rec.ID, keyFile, rec.Path, "after", what, "attempts", pf.Attempts, "next_try", pf.Next, keyErr, msg)
		return nil
	}
	a.logger.Error("delivered, but post-processing failed: the file stays where it is; fix the cause, then `dropship retry ID` tries at once", keyTransferID, rec.ID, keyFile, rec.Path, "after", what, "attempts", pf.Attempts, "next_try", pf.Next, keyErr, msg)
	if t == nil {
		return nil
	}
	next := pf.Next
	ev := a.transferEvent(t, rec, statePostFailed, time.Time{}, time.Time{}, &transfer.Error{Class: transfer.Class(what), Message: msg, ExitCode: -1}, &next)
	return &journal.Op{Events: []journal.Event{ev}}
}

// rootCause is the innermost error of err's chain, as text.
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// postDone forgets the post-processing failure of key, if any: it succeeded
// (rec non-nil), or there is nothing left to do.
func (a *Agent) postDone(key string, rec *journal.Record) {
	a.mu.Lock()
	pf := a.postFails[key]
	delete(a.postFails, key)
	a.mu.Unlock()
	if pf != nil && rec != nil && pf.ID == rec.ID {
		a.logger.Info("post-processing done after earlier failures", keyTransferID, rec.ID, keyFile, rec.Path, "after", pf.Op, "attempts", pf.Attempts+1)
	}
}

// postMessage is err for an operator: for a refused permission, which
// folder, whose it is, and what to do.
func postMessage(err error) string {
	msg := err.Error()
	if !errors.Is(err, fs.ErrPermission) && !errors.Is(err, syscall.EROFS) {
		return msg
	}
	var pathErr *fs.PathError
	var linkErr *os.LinkError
	p := ""
	switch {
	case errors.As(err, &linkErr):
		// A rename needs both folders: name the one that refuses.
		p = linkErr.Old
		if errs, cerr := access.Check(access.Current(), []access.Request{{Path: filepath.Dir(linkErr.Old), Mode: access.Write | access.Exec}}); cerr == nil && errs[0] == nil {
			p = linkErr.New
		}
	case errors.As(err, &pathErr):
		p = pathErr.Path
	}
	if errors.Is(err, syscall.EROFS) {
		return msg + ": the file system is read-only for dropship (under systemd: add the folder to ReadWritePaths= in a drop-in, see the README)"
	}
	if p == "" {
		return msg
	}
	dir := filepath.Dir(p)
	fi, serr := os.Stat(dir)
	if serr != nil {
		return msg
	}
	who := ""
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		who = fmt.Sprintf("owner %s, group %s, ", userName(int(st.Uid)), groupName(int(st.Gid)))
	}
	me := userName(os.Geteuid())
	return fmt.Sprintf("%s: the folder %s (%smode %s) is not writable by %s: make the watch folder setgid with a group %s is in, and its sub-folders group-writable (uploaders' umask 002 or 007, or a default ACL: setfacl -d -m g:GROUP:rwX), see the README", msg, dir, who, fi.Mode().String(), me, me)
}

// afterSent applies `after` to a delivered file. A file that changed since it
// was sent is left alone: it is not the version that arrived, so it goes
// back to the queue.
func (a *Agent) afterSent(rec *journal.Record, w *config.Watch) (*journal.Op, error) {
	fi, err := os.Lstat(rec.Path)
	if err == nil && fi.Mode()&os.ModeSymlink != 0 && w.FollowSymlinks {
		// The watch sends what its links lead to (inside the folder).
		fi, err = os.Stat(rec.Path)
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		// Gone already (moved by someone, or archived before a crash).
		return a.forget(rec), nil
	case err != nil:
		return nil, err
	case !fi.Mode().IsRegular():
		// Replaced by a symlink, a folder or the like: not the file that
		// was delivered, and not dropship's to move or delete.
		a.logger.Warn("file replaced by something that is not a regular file after it was sent; leaving it alone", keyTransferID, rec.ID, keyFile, rec.Path, "type", fi.Mode().Type().String())
		return a.forget(rec), nil
	}
	if id := identityOf(fi); !rec.SameFile(id.size, id.mtime, id.dev, id.inode) {
		a.logger.Warn("file changed after it was sent; not archiving it, sending the new version", keyTransferID, rec.ID, keyFile, rec.Path)
		a.mu.Lock()
		defer a.mu.Unlock()
		r := *rec
		r.ID = newID()
		r.State, r.Attempts, r.SHA256 = journal.Queued, 0, ""
		r.Size, r.ModTime, r.Dev, r.Inode = id.size, id.mtime, id.dev, id.inode
		r.NextTry = time.Now().Add(max(time.Second, w.Settle))
		r.QueuedAt, r.UpdatedAt = time.Now(), time.Now()
		r.EventIDs = nil
		a.recs[r.Key] = &r
		if t := a.targets[r.Target]; t != nil {
			ev := a.transferEvent(t, &r, stateQueued, time.Time{}, time.Time{}, nil, nil)
			r.EventIDs = append(r.EventIDs, ev.ID)
			t.enqueue(r.Key)
			return &journal.Op{Put: &r, Events: []journal.Event{ev}}, nil
		}
		return &journal.Op{Put: &r}, nil
	}
	if w.After != config.AfterKeep && !a.allDelivered(rec, w) {
		// A fan-out: the file stays (state sent) until its last target
		// has it; that delivery applies `after`. When another target
		// failed for good and nothing is left to send, the file is
		// handled as failed (failed_dir) now.
		if a.settled(rec, w) {
			a.mu.Lock()
			sibs := a.siblings(rec, w)
			a.mu.Unlock()
			for _, sib := range sibs {
				if sib != nil && sib.State == journal.Failed {
					return a.afterFailed(sib, w)
				}
			}
		}
		return nil, nil
	}
	var done *journal.Event // the source's source-deleted event
	switch w.After {
	case config.AfterKeep:
		a.mu.Lock()
		defer a.mu.Unlock()
		r := *rec
		r.State, r.UpdatedAt = journal.Done, time.Now()
		a.recs[r.Key] = &r
		return &journal.Op{Put: &r}, nil
	case config.AfterDelete:
		if w.Source != "" {
			// Every target has it: the source's `after` first, then
			// the spool copy goes.
			ev, err := a.sourceDone(rec, w)
			if err != nil {
				return nil, err
			}
			done = ev
		}
		hidden, err := a.claim(rec)
		if err != nil {
			return a.claimFailed(rec, err)
		}

		if err := removeIfExists(hidden); err != nil {
			return nil, err
		}
		if rec.Marker != "" {
			_ = removeIfExists(rec.Marker)
		}
	default: // archive
		if err := a.moveWithMarker(w.ArchiveDir, rec); err != nil {
			if errors.Is(err, errNotThisVersion) || errors.Is(err, os.ErrNotExist) {
				return a.claimFailed(rec, err)
			}
			return nil, fmt.Errorf("archive into %s: %w", w.ArchiveDir, err)
		}
	}
	a.forgetSiblings(rec, w)
	op := a.forget(rec)
	if done != nil {
		op.Events = append(op.Events, *done)
	}
	return op, nil
}

// allDelivered says whether every target of rec's watch has rec's version
// of the file (only rec's own for a watch with one target).
func (a *Agent) allDelivered(rec *journal.Record, w *config.Watch) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, sib := range a.siblings(rec, w) {
		if sib == nil || sib.State != journal.Sent || !sib.SameFile(rec.Size, rec.ModTime, rec.Dev, rec.Inode) {
			return false
		}
	}
	if sibs := a.siblings(rec, w); len(sibs) > 0 {
		a.logger.Info("delivered to every target of the watch", keyFile, rec.Path, "targets", len(sibs)+1)
	}
	return true
}

// settled says whether no other target of rec's watch still has rec's file
// to send (queued or being sent).
func (a *Agent) settled(rec *journal.Record, w *config.Watch) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, sib := range a.siblings(rec, w) {
		if sib != nil && (sib.State == journal.Queued || sib.State == journal.Sending || a.sending[sib.Key]) {
			return false
		}
	}
	return true
}

// forgetSiblings drops the records of the other targets of rec's file once
// the file is archived, deleted or moved away.
func (a *Agent) forgetSiblings(rec *journal.Record, w *config.Watch) {
	var ops []journal.Op
	a.mu.Lock()
	for _, sib := range a.siblings(rec, w) {
		if sib != nil {
			delete(a.recs, sib.Key)
			ops = append(ops, journal.Op{Delete: sib.Key})
		}
	}
	a.mu.Unlock()
	if len(ops) > 0 {
		a.writer.add(ops...)
	}
}

// errNotThisVersion: the file at a record's path is no longer the version
// the record describes.
var errNotThisVersion = errors.New("another version of the file took its place")

// claim takes the file at rec.Path out of the watch folder's sight, provided
// it is still the version rec describes, and returns where it is now: a
// hidden name beside it. Checking first and then moving by name would race
// with a writer (or an attacker) replacing the file in between, and move or
// delete a version that was never delivered; so the file is moved first (a
// rename is atomic) and what was moved is checked. A different file is put
// back, unless yet another one took the name meanwhile: then it stays under
// the hidden name, and an ERROR says where.
func (a *Agent) claim(rec *journal.Record) (string, error) {
	hidden := filepath.Join(filepath.Dir(rec.Path), ".dropship-claim-"+rec.ID)
	if err := os.Rename(rec.Path, hidden); err != nil {
		return "", err
	}
	fi, err := os.Lstat(hidden)
	if err != nil {
		return "", err
	}
	if id := identityOf(fi); fi.Mode().IsRegular() && rec.SameFile(id.size, id.mtime, id.dev, id.inode) {
		return hidden, nil
	}
	if err := unix.Renameat2(unix.AT_FDCWD, hidden, unix.AT_FDCWD, rec.Path, unix.RENAME_NOREPLACE); err != nil {
		a.logger.Error("a newer version of a delivered file was caught while archiving or deleting the delivered one, and could not be put back because yet another file took its name; it waits under a hidden name: move it back by hand", keyTransferID, rec.ID, keyFile, rec.Path, "hidden", hidden, keyErr, err)
	}
	return "", errNotThisVersion
}

// claimFailed handles a delivered file that could not be claimed for
// post-processing because it is gone or another version took its place:
// that one is not the delivered file and is sent as a transfer of its own
// once it is ready (the watcher reports it); the delivered version is done.
func (a *Agent) claimFailed(rec *journal.Record, err error) (*journal.Op, error) {
	if errors.Is(err, errNotThisVersion) {
		a.logger.Warn("file replaced while it was being archived or deleted; the new version was left in place and is sent as a transfer of its own", keyTransferID, rec.ID, keyFile, rec.Path)
	}
	return a.forget(rec), nil
}

// moveWithMarker moves a file, provided it is still the version rec
// describes (see claim), and its ready marker if it has one, to the same
// relative place under dir.
func (a *Agent) moveWithMarker(dir string, rec *journal.Record) error {
	hidden, err := a.claim(rec)
	if err != nil {
		return err
	}
	if err := moveInto(dir, rec.Rel, hidden); err != nil {
		// Back where it was, for the next try.
		_ = unix.Renameat2(unix.AT_FDCWD, hidden, unix.AT_FDCWD, rec.Path, unix.RENAME_NOREPLACE)
		return err
	}
	if rec.Marker != "" {
		_ = moveInto(dir, path.Join(path.Dir(rec.Rel), filepath.Base(rec.Marker)), rec.Marker)
	}
	return nil
}

// forget drops a record whose file is done with; the returned change deletes
// it from the journal.
func (a *Agent) forget(rec *journal.Record) *journal.Op {
	a.mu.Lock()
	delete(a.recs, rec.Key)
	a.mu.Unlock()
	return &journal.Op{Delete: rec.Key}
}

// afterFailed moves a file that failed for good into failed_dir, if one is
// configured.
func (a *Agent) afterFailed(rec *journal.Record, w *config.Watch) (*journal.Op, error) {
	if w.FailedDir == "" || !a.settled(rec, w) {
		// Without failed_dir, or while another target of a fan-out
		// still has the file to send, it stays where it is.
		return nil, nil
	}
	if err := a.moveWithMarker(w.FailedDir, rec); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, errNotThisVersion) {
		return nil, fmt.Errorf("move into failed_dir %s: %w", w.FailedDir, err)
	}
	a.forgetSiblings(rec, w)
	return a.forget(rec), nil
}

// sweep retries post-processing that failed earlier, for the files whose
// backoff is over (all of them with now set, as `dropship retry` asks).
func (a *Agent) sweep() { a.sweepAt(time.Now(), false) }

func (a *Agent) sweepAt(now time.Time, all bool) {
	a.mu.Lock()
	var due, later []string
	seen := map[string]bool{}
	for _, key := range a.postq {
		if seen[key] {
			continue
		}
		seen[key] = true
		if pf := a.postFails[key]; pf != nil && !all && now.Before(pf.Next) {
			later = append(later, key)
			continue
		}
		due = append(due, key)
	}
	a.postq = later
	a.mu.Unlock()
	if len(due) > 0 {
		a.finish(due)
	}
}

// moveInto moves src to dir/rel, creating folders. An existing file there is
// not overwritten: the new one gets a time suffix. Across file systems it
// copies, syncs, and removes the source.
func moveInto(dir, rel, src string) error {
	dst := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		dst = fmt.Sprintf("%s.%s", dst, time.Now().UTC().Format("20060102T150405.000000000Z"))
	}
	err := os.Rename(src, dst)
	if errors.Is(err, syscall.EXDEV) {
		return copyThenRemove(src, dst)
	}
	return err
}

func copyThenRemove(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	tmp := dst + ".dropship-tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	_ = os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Remove(src)
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// userName names uid, or says "uid N" when it has no name.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

// groupName names gid, or says "gid N" when it has no name.
func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil && g.Name != "" {
		return g.Name
	}
	return "gid " + strconv.Itoa(gid)
}
