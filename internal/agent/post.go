package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/journal"
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
// `after`, files failed for good into failed_dir. What fails is retried by
// the periodic sweep.
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
			continue
		}
		var op *journal.Op
		var err error
		switch rec.State {
		case journal.Sent:
			op, err = a.afterSent(rec, w)
		case journal.Failed:
			op, err = a.afterFailed(rec, w)
		default:
			continue
		}
		if err != nil {
			a.logger.Error("post-processing failed; will try again", keyTransferID, rec.ID, keyFile, rec.Path, "after", w.After, keyErr, err)
			a.mu.Lock()
			a.postq = append(a.postq, key)
			a.mu.Unlock()
			continue
		}
		if op != nil {
			ops = append(ops, *op)
		}
	}
	a.commit(ops...)
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
	switch w.After {
	case config.AfterKeep:
		a.mu.Lock()
		defer a.mu.Unlock()
		r := *rec
		r.State, r.UpdatedAt = journal.Done, time.Now()
		a.recs[r.Key] = &r
		return &journal.Op{Put: &r}, nil
	case config.AfterDelete:
		if err := removeIfExists(rec.Path); err != nil {
			return nil, err
		}
		if rec.Marker != "" {
			_ = removeIfExists(rec.Marker)
		}
	default: // archive
		if err := moveWithMarker(w.ArchiveDir, rec); err != nil {
			return nil, fmt.Errorf("archive into %s: %w", w.ArchiveDir, err)
		}
	}
	return a.forget(rec), nil
}

// moveWithMarker moves a file, and its ready marker if it has one, to the
// same relative place under dir.
func moveWithMarker(dir string, rec *journal.Record) error {
	if err := moveInto(dir, rec.Rel, rec.Path); err != nil {
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
	if w.FailedDir == "" {
		return nil, nil
	}
	if err := moveWithMarker(w.FailedDir, rec); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("move into failed_dir %s: %w", w.FailedDir, err)
	}
	return a.forget(rec), nil
}

// sweep retries post-processing that failed earlier.
func (a *Agent) sweep() {
	a.mu.Lock()
	keys := a.postq
	a.postq = nil
	a.mu.Unlock()
	if len(keys) > 0 {
		a.finish(keys)
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
