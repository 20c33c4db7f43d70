package transfer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
)

// The download side of the engine: listing a partner's folder and fetching
// its files, for a relay that pulls from an SFTP server. It goes through the
// same shared OpenSSH connection, prompts and host-key policy as uploads,
// and only over SFTP: scp cannot list a folder.
//
// What it promises:
//   - a listing holds the regular files only (symbolic links, folders
//     when not recursive, devices are left out), with the size and mtime
//     the server gave;
//   - a fetched file is written under a temporary name beside its local
//     path, hashed in the same pass, synced, and renamed into place only
//     when it is whole and still the version that was listed: a file that
//     changed on the server between its listing and the end of its fetch
//     fails with ClassSourceChanged and leaves nothing under the local name;
//   - the source is deleted or moved only when it is still the version that
//     was fetched.
//
// Memory: each fetch in flight has at most requestsPerFile reads of
// maxPacket bytes outstanding (pkg/sftp's File.WriteTo), and at most
// Connections × UploadsPerSession fetches run at once.

// Listed is one regular file of a remote folder, as a listing saw it.
type Listed struct {
	// Rel is its path below the listed folder, slash-separated: the
	// server's bytes, newlines and all.
	Rel     string
	Size    int64
	ModTime time.Time // the server's mtime (SFTP carries whole seconds)
	Mode    fs.FileMode
}

// Same reports whether fi describes the version l saw: a regular file of the
// same size and mtime.
func (l Listed) Same(fi fs.FileInfo) bool {
	return fi.Mode().IsRegular() && fi.Size() == l.Size && fi.ModTime().Equal(l.ModTime)
}

// Fetch is one file to download.
type Fetch struct {
	RemoteDir string
	Listed
	// Local is the path the file gets. Its folder must exist; the file is
	// written as a temporary file in it first (".dropship-fetch-*"), and
	// an existing file of that name is replaced.
	Local string
}

// RemotePath is the file's path on the server.
func (f Fetch) RemotePath() string { return RemotePath(f.RemoteDir, f.Rel) }

// Fetched is the outcome of one Fetch.
type Fetched struct {
	SHA256 string // of the bytes written to Local
	Bytes  int64
	Err    error // nil when the file is at Local
}

// List returns the regular files in remoteDir (and, when recursive, below
// it), sorted by Rel.
func (c *Client) List(ctx context.Context, remoteDir string, recursive bool) ([]Listed, error) {
	var out []Listed
	err := c.withSession(ctx, func(s *sftpConn) error {
		out = nil
		return c.list(ctx, s, remoteDir, "", recursive, &out)
	})
	slices.SortFunc(out, func(a, b Listed) int { return strings.Compare(a.Rel, b.Rel) })
	return out, err
}

func (c *Client) list(ctx context.Context, s *sftpConn, remoteDir, rel string, recursive bool, out *[]Listed) error {
	if err := ctx.Err(); err != nil {
		return canceled()
	}
	dir := RemotePath(remoteDir, rel)
	var fis []os.FileInfo
	err := s.do(func() (err error) { fis, err = s.client.ReadDirContext(ctx, dir); return })
	if err != nil {
		if rel != "" && (errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission)) {
			// A sub-folder removed or closed to us meanwhile: the
			// partner's business, not a reason to list nothing.
			c.logger.Warn("a folder of the source cannot be listed; skipping it", "folder", dir, "err", err)
			return nil
		}
		return s.requestErr(ctx, "list", dir, err)
	}
	for _, fi := range fis {
		name := fi.Name()
		if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
			continue
		}
		r := name
		if rel != "" {
			r = rel + "/" + name
		}
		switch {
		case fi.Mode().IsRegular():
			*out = append(*out, Listed{Rel: r, Size: fi.Size(), ModTime: fi.ModTime(), Mode: fi.Mode()})
		case fi.IsDir() && recursive:
			if err := c.list(ctx, s, remoteDir, r, recursive, out); err != nil {
				return err
			}
		}
	}
	return nil
}

// Download fetches items, several at once (up to Connections ×
// UploadsPerSession), and returns their outcomes in the order of items.
func (c *Client) Download(ctx context.Context, items []Fetch) []Fetched {
	res := make([]Fetched, len(items))
	if c.speakSCP() {
		for i := range res {
			res[i].Err = noSFTP()
		}
		return res
	}
	var wg sync.WaitGroup
	for i := range items {
		release, slot, err := c.acquire(ctx)
		if err != nil {
			for j := i; j < len(items); j++ {
				res[j].Err = err
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release()
			s, m, err := c.open(ctx, slot)
			if err == nil {
				c.choseSFTP(m)
				res[i] = c.fetch(ctx, s, items[i])
				if !s.alive() {
					c.dropSession(slot, s)
				}
				return
			}
			if c.fallBack(m, err) {
				err = noSFTP()
			}
			res[i].Err = err
		}()
	}
	wg.Wait()
	return res
}

// fetch downloads one file over s.
func (c *Client) fetch(ctx context.Context, s *sftpConn, it Fetch) (r Fetched) {
	src := it.RemotePath()
	if err := checkRel(it.Rel); err != nil {
		r.Err = err
		return r
	}
	var f *sftp.File
	if err := s.do(func() (err error) { f, err = s.client.Open(src); return }); err != nil {
		r.Err = s.requestErr(ctx, "open", src, err)
		return r
	}
	defer func() { _ = f.Close() }()
	var fi os.FileInfo
	if err := s.do(func() (err error) { fi, err = f.Stat(); return }); err != nil {
		r.Err = s.requestErr(ctx, "stat", src, err)
		return r
	}
	if !it.Same(fi) {
		r.Err = sourceChanged(src, "it changed since it was listed; nothing was fetched")
		return r
	}

	dir := filepath.Dir(it.Local)
	tmp, err := os.CreateTemp(dir, ".dropship-fetch-*")
	if err != nil {
		r.Err = localWriteErr("create a temporary file in", dir, err)
		return r
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	w := &fetchSink{ctx: ctx, c: c, s: s, src: src, dst: tmp, h: h, max: it.Size}
	// Read until the end, whatever the listing said: a file that grew is
	// caught by the sink's bound and by the stat below.
	werr := s.do(func() error {
		_, err := f.WriteTo(w)
		return err
	})
	r.Bytes = w.n
	switch {
	case w.err != nil:
		r.Err = w.err
		return r
	case werr != nil:
		r.Err = s.requestErr(ctx, "read", src, werr)
		return r
	}
	if err := s.do(func() (err error) { fi, err = f.Stat(); return }); err != nil {
		r.Err = s.requestErr(ctx, "stat", src, err)
		return r
	}
	if !it.Same(fi) || w.n != it.Size {
		r.Err = sourceChanged(src, fmt.Sprintf("it changed while it was being fetched (%d bytes read, %d listed); nothing was kept", w.n, it.Size))
		return r
	}
	if err := tmp.Sync(); err != nil {
		r.Err = localWriteErr("sync", tmp.Name(), err)
		return r
	}
	if err := tmp.Close(); err != nil {
		r.Err = localWriteErr("close", tmp.Name(), err)
		return r
	}
	// The listed mtime, so that what is made of the spool (its readiness,
	// the mtime the destination gets) sees the source's.
	if err := os.Chtimes(tmp.Name(), it.ModTime, it.ModTime); err != nil {
		r.Err = localWriteErr("set the mtime of", tmp.Name(), err)
		return r
	}
	if err := os.Rename(tmp.Name(), it.Local); err != nil {
		r.Err = localWriteErr("rename into", it.Local, err)
		return r
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	r.SHA256 = hex.EncodeToString(h.Sum(nil))
	return r
}

// fetchSink is where a fetch's bytes go: the temporary file and the hash,
// under the bandwidth limit, counted as progress for the stall watchdog,
// and never more than the listed size.
type fetchSink struct {
	ctx context.Context
	c   *Client
	s   *sftpConn
	src string
	dst *os.File
	h   io.Writer
	max int64
	n   int64
	err error // the sink's own failure, which WriteTo then returns
}

func (w *fetchSink) Write(p []byte) (int, error) {
	w.s.touch()
	if w.n+int64(len(p)) > w.max {
		w.err = sourceChanged(w.src, fmt.Sprintf("it grew beyond the %d bytes it had when listed; nothing was kept", w.max))
		return 0, w.err
	}
	for off := 0; off < len(p); off += chunkSize {
		if err := w.c.throttle(w.ctx, min(chunkSize, len(p)-off)); err != nil {
			w.err = canceled()
			return 0, w.err
		}
	}
	n, err := w.dst.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.err = localWriteErr("write", w.dst.Name(), err)
	}
	return n, w.err
}

// RemoveSource deletes the fetched file l of remoteDir from the server, if
// it is still the version that was fetched: a new version uploaded since is
// kept (ClassSourceChanged). A file already gone is no error.
func (c *Client) RemoveSource(ctx context.Context, remoteDir string, l Listed) error {
	p := RemotePath(remoteDir, l.Rel)
	return c.withSession(ctx, func(s *sftpConn) error {
		if err := c.stillFetched(ctx, s, p, l); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := s.do(func() error { return s.client.Remove(p) }); err != nil && !errors.Is(err, os.ErrNotExist) {
			return s.requestErr(ctx, "remove", p, err)
		}
		return nil
	})
}

// RemoveMarker deletes the ready marker rel of remoteDir from the server,
// whatever it holds (a marker's content means nothing). A marker already
// gone is no error.
func (c *Client) RemoveMarker(ctx context.Context, remoteDir, rel string) error {
	if err := checkRel(rel); err != nil {
		return err
	}
	p := RemotePath(remoteDir, rel)
	return c.withSession(ctx, func(s *sftpConn) error {
		if err := s.do(func() error { return s.client.Remove(p) }); err != nil && !errors.Is(err, os.ErrNotExist) {
			return s.requestErr(ctx, "remove", p, err)
		}
		return nil
	})
}

// MoveSource moves the fetched file l of remoteDir into moveDir on the server
// (same relative path, folders created as needed), if it is still the
// version that was fetched. A file of that name in moveDir is not
// overwritten (ClassRemoteExists): OpenSSH's sftp-server renames with link
// and unlink, which refuse an existing target.
func (c *Client) MoveSource(ctx context.Context, remoteDir string, l Listed, moveDir string) error {
	from, to := RemotePath(remoteDir, l.Rel), RemotePath(moveDir, l.Rel)
	return c.withSession(ctx, func(s *sftpConn) error {
		if err := c.stillFetched(ctx, s, from, l); err != nil {
			return err
		}
		if err := c.remoteDirs(s, moveDir, path.Dir(to)); err != nil {
			return err
		}
		err := s.do(func() error { return s.client.Rename(from, to) })
		if err == nil {
			return nil
		}
		var fi os.FileInfo
		if s.do(func() (e error) { fi, e = s.client.Lstat(to); return }) == nil && fi != nil {
			return &Error{Class: ClassRemoteExists, Message: fmt.Sprintf("move %q to %q: a file of that name is there already; the source is left where it is", from, to), ExitCode: -1}
		}
		return s.requestErr(ctx, "move", from, err)
	})
}

// stillFetched checks that p on the server is still the version l.
func (c *Client) stillFetched(ctx context.Context, s *sftpConn, p string, l Listed) error {
	var fi os.FileInfo
	if err := s.do(func() (err error) { fi, err = s.client.Lstat(p); return }); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return err
		}
		return s.requestErr(ctx, "stat", p, err)
	}
	if !l.Same(fi) {
		return sourceChanged(p, "a new version replaced the one that was fetched; it is left for the next listing")
	}
	return nil
}

// withSession runs f on an SFTP session of the client's, dropping the
// session if it ended meanwhile.
func (c *Client) withSession(ctx context.Context, f func(*sftpConn) error) error {
	if c.speakSCP() {
		return noSFTP()
	}
	release, slot, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
	s, m, err := c.open(ctx, slot)
	if err != nil {
		if c.fallBack(m, err) {
			return noSFTP()
		}
		return err
	}
	c.choseSFTP(m)
	err = f(s)
	if !s.alive() {
		c.dropSession(slot, s)
	}
	return err
}

// requestErr is the error of a request of the session: the session's own
// failure when it ended, the request's otherwise.
func (s *sftpConn) requestErr(ctx context.Context, op, p string, err error) *Error {
	var te *Error
	switch {
	case errors.As(err, &te):
		return te
	case ctx.Err() != nil:
		return canceled()
	case isConnErr(err) || !s.alive():
		return s.failureOr(ClassLostConnection, "the SFTP session ended")
	case errors.Is(err, os.ErrPermission):
		return &Error{Class: ClassRemotePermission, Message: fmt.Sprintf("%s %q: Permission denied (check what the source's user may read, delete or move in remote_dir)", op, p), ExitCode: -1}
	case errors.Is(err, os.ErrNotExist) && op != "list":
		return sourceChanged(p, "it is gone from the server (removed or renamed since it was listed)")
	}
	return requestErr(op, p, err)
}

// checkRel refuses a relative path that could leave the folders it is joined
// to: the server's names are the partner's, and not to be trusted.
func checkRel(rel string) error {
	if rel == "" || path.IsAbs(rel) || path.Clean(rel) != rel || rel == ".." || strings.HasPrefix(rel, "../") || strings.ContainsRune(rel, 0) {
		return &Error{Class: ClassBadName, Message: fmt.Sprintf("%q is not a clean relative path", rel), ExitCode: -1}
	}
	return nil
}

func sourceChanged(p, why string) *Error {
	return &Error{Class: ClassSourceChanged, Message: fmt.Sprintf("%s: %s", p, why), ExitCode: -1}
}

func localWriteErr(op, p string, err error) *Error {
	msg := fmt.Sprintf("%s %s: %v", op, p, err)
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		msg += " (the local disk is full: free space under state_dir)"
	}
	return &Error{Class: ClassLocalFile, Message: msg, ExitCode: -1}
}

func noSFTP() *Error {
	return &Error{Class: ClassRemoteConfig, Message: "listing and fetching need SFTP, and the server offers only scp (protocol = \"scp\", or no SFTP subsystem)", ExitCode: -1}
}

func canceled() *Error {
	return &Error{Class: ClassCanceled, Message: "stopped", ExitCode: -1}
}
