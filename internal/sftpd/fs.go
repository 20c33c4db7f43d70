package sftpd

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/pkg/sftp"
)

// handlers serve one SFTP session from the real file system. Paths arrive
// absolute: pkg/sftp joins relative ones to home. Errors are returned as the
// os package gives them, so that pkg/sftp maps ENOENT and EACCES to the
// SFTP status codes OpenSSH clients print ("No such file or directory",
// "Permission denied"); anything else becomes "Failure".
type handlers struct {
	conn *conn
	home string
	log  *slog.Logger
	exts []extension // offered to this session; see Quirks

	mu    sync.Mutex
	files map[*file]struct{} // open for writing, for fsync
}

var (
	_ sftp.FileReader           = (*handlers)(nil)
	_ sftp.OpenFileWriter       = (*handlers)(nil)
	_ sftp.PosixRenameFileCmder = (*handlers)(nil)
	_ sftp.StatVFSFileCmder     = (*handlers)(nil)
	_ sftp.LstatFileLister      = (*handlers)(nil)
	_ sftp.RealPathFileLister   = (*handlers)(nil)
	_ sftp.ReadlinkFileLister   = (*handlers)(nil)
)

// errFileExists is plain rename's answer when the target exists, as in
// SFTPv3, which has no better code: SSH_FX_FAILURE, message "file exists".
var errFileExists = statusError{sftp.ErrSSHFxFailure, "file exists"}

// statusError is an SFTP status code with a message of its own.
type statusError struct {
	code error // an sftp.ErrSSHFx* code
	msg  string
}

func (e statusError) Error() string { return e.msg }
func (e statusError) Unwrap() error { return e.code }

// record logs an operation on the server; it returns err.
func (h *handlers) record(kind, p, target string, err error) error {
	return h.conn.srv.record(Op{Kind: kind, Path: p, Target: target, Err: err})
}

// unsupported refuses a request for an extension this session was not
// offered.
func (h *handlers) unsupported(ext, p string) error {
	h.log.Info("sftpd quirk: extension not offered", "extension", ext, logPath, p)
	return sftp.ErrSSHFxOpUnsupported
}

// Fileread opens a file for a download.
func (h *handlers) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	f, err := os.Open(r.Filepath)
	if err != nil {
		return nil, h.record(OpRead, r.Filepath, "", err)
	}
	h.record(OpRead, r.Filepath, "", nil)
	return &readFile{File: f, h: h}, nil
}

// readFile is a file being downloaded.
type readFile struct {
	*os.File
	h    *handlers
	sent atomic.Int64 // bytes of file data served
}

// ReadAt serves p from off, unless a fault says otherwise.
func (f *readFile) ReadAt(p []byte, off int64) (int, error) {
	c := f.h.conn
	if n := c.srv.Faults().DisconnectAfterRead; n > 0 && f.sent.Add(int64(len(p))) >= n {
		f.h.log.Info("sftpd fault: closing the connection", logFault, "DisconnectAfterRead", logPath, f.Name(), "sent", f.sent.Load())
		c.drop()
		return 0, sftp.ErrSSHFxConnectionLost
	}
	return f.File.ReadAt(p, off)
}

// Filewrite opens a file for an upload.
func (h *handlers) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	f, err := h.openWrite(r, os.O_WRONLY)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// OpenFile opens a file for reading and writing.
func (h *handlers) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	f, err := h.openWrite(r, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (h *handlers) openWrite(r *sftp.Request, mode int) (*file, error) {
	if f := h.conn.srv.Faults(); f.DenyWrite {
		h.log.Info("sftpd fault: open for writing denied", logFault, "DenyWrite", logPath, r.Filepath)
		return nil, h.record(OpOpen, r.Filepath, "", sftp.ErrSSHFxPermissionDenied)
	}
	pf := r.Pflags()
	flags := mode
	if pf.Creat {
		flags |= os.O_CREATE
	}
	if pf.Trunc {
		flags |= os.O_TRUNC
	}
	if pf.Excl {
		flags |= os.O_EXCL
	}
	// O_APPEND is left out on purpose: writes carry their offsets.
	perm := fs.FileMode(0o666)
	if r.AttrFlags().Permissions {
		perm = r.Attributes().FileMode().Perm()
	}
	osf, err := os.OpenFile(r.Filepath, flags, perm)
	if err != nil {
		return nil, h.record(OpOpen, r.Filepath, "", err)
	}
	f := &file{File: osf, h: h, log: h.log}
	h.mu.Lock()
	h.files[f] = struct{}{}
	h.mu.Unlock()
	h.record(OpOpen, r.Filepath, "", nil)
	return f, nil
}

// Filecmd carries out setstat, rename, mkdir, rmdir, remove, link and
// symlink requests, and fsync@openssh.com (see sftpChannel).
func (h *handlers) Filecmd(r *sftp.Request) error {
	switch r.Method {
	case "Setstat":
		if isFSync(r.Flags, r.Attrs) {
			return h.record(OpFSync, r.Filepath, "", h.fsync(r.Filepath))
		}
		return h.record(OpSetstat, r.Filepath, "", h.setstat(r))
	case "Rename":
		return h.rename(r, false)
	case "Mkdir":
		perm := fs.FileMode(0o777)
		if r.AttrFlags().Permissions {
			perm = r.Attributes().FileMode().Perm()
		}
		return h.record(OpMkdir, r.Filepath, "", os.Mkdir(r.Filepath, perm))
	case "Rmdir":
		return h.record(OpRmdir, r.Filepath, "", pathErr("rmdir", r.Filepath, syscall.Rmdir(r.Filepath)))
	case "Remove":
		return h.record(OpRemove, r.Filepath, "", pathErr("remove", r.Filepath, syscall.Unlink(r.Filepath)))
	case "Link":
		// Only hardlink@openssh.com comes here; SFTPv3 has no link request.
		if !offers(h.exts, extHardlink) {
			return h.record(OpLink, r.Filepath, r.Target, h.unsupported(extHardlink, r.Filepath))
		}
		return h.record(OpLink, r.Filepath, r.Target, os.Link(r.Filepath, r.Target))
	case "Symlink":
		// pkg/sftp puts the link's target in Filepath and its name in Target.
		return h.record(OpSymlink, r.Filepath, r.Target, os.Symlink(r.Filepath, r.Target))
	}
	return sftp.ErrSSHFxOpUnsupported
}

// PosixRename is posix-rename@openssh.com: an atomic rename(2) that replaces
// the target. OpenSSH's sftp uses it for "rename" when offered.
func (h *handlers) PosixRename(r *sftp.Request) error {
	return h.rename(r, true)
}

// rename serves SSH_FXP_RENAME and, with posix, posix-rename@openssh.com.
// SSH_FXP_RENAME does not replace an existing target (OpenSSH's sftp-server
// answers "Failure") unless Quirks.RenameReplaces; posix-rename does.
func (h *handlers) rename(r *sftp.Request, posix bool) error {
	kind := OpRename
	if posix {
		kind = OpPosixRename
		if !offers(h.exts, extPosixRename) {
			return h.record(kind, r.Filepath, r.Target, h.unsupported(extPosixRename, r.Filepath))
		}
	}
	if h.conn.srv.Faults().RejectRename {
		h.log.Info("sftpd fault: rename rejected", logFault, "RejectRename", logPath, r.Filepath)
		return h.record(kind, r.Filepath, r.Target, sftp.ErrSSHFxPermissionDenied)
	}
	q := h.conn.srv.Quirks()
	if !posix && !q.RenameReplaces {
		if _, err := os.Lstat(r.Target); err == nil {
			return h.record(kind, r.Filepath, r.Target, errFileExists)
		}
	}
	if err := os.Rename(r.Filepath, r.Target); err != nil {
		return h.record(kind, r.Filepath, r.Target, err)
	}
	h.record(kind, r.Filepath, r.Target, nil)
	if q.pickUp(r.Target) {
		h.pickUp(r.Target, q.PickupDir)
	}
	return nil
}

// pickUp takes a renamed file away, as a partner's pickup process would
// (see Quirks.PickUpRenamed): it removes p, or moves it into dir.
func (h *handlers) pickUp(p, dir string) {
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
		return
	}
	var err error
	dst := ""
	if dir != "" {
		dst = filepath.Join(dir, filepath.Base(p))
		err = os.Rename(p, dst)
	} else {
		err = os.Remove(p)
	}
	if err != nil {
		h.log.Error("sftpd quirk: pickup failed", logPath, p, logError, err)
	} else {
		h.log.Info("sftpd quirk: renamed file picked up", logPath, p, "to", dst)
	}
	h.record(OpPickUp, p, dst, err)
}

// fsync is fsync@openssh.com on the file open as p: it flushes the file to
// stable storage, through a handle of this session when one is open for
// writing (pkg/sftp gives the handle's path only).
func (h *handlers) fsync(p string) error {
	if !offers(h.exts, extFSync) {
		return h.unsupported(extFSync, p)
	}
	h.mu.Lock()
	var open *file
	for f := range h.files {
		if f.Name() == p {
			open = f
			break
		}
	}
	h.mu.Unlock()
	if open != nil {
		return open.Sync()
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// statVFSUsed is the used space statvfs@openssh.com reports with
// Quirks.FreeSpace, so that the size is never 0 (clients divide by it).
const statVFSUsed = 1 << 30

// StatVFS is statvfs@openssh.com: the file system holding the path, or
// Quirks.FreeSpace.
func (h *handlers) StatVFS(r *sftp.Request) (*sftp.StatVFS, error) {
	if !offers(h.exts, extStatVFS) {
		return nil, h.record(OpStatVFS, r.Filepath, "", h.unsupported(extStatVFS, r.Filepath))
	}
	// Like OpenSSH, stat a missing path as an error.
	if _, err := os.Stat(r.Filepath); err != nil {
		return nil, h.record(OpStatVFS, r.Filepath, "", err)
	}
	free := h.conn.srv.Quirks().FreeSpace
	if free == 0 {
		st, err := realStatVFS(r.Filepath)
		return st, h.record(OpStatVFS, r.Filepath, "", err)
	}
	size := uint64(max(free, 0))
	h.record(OpStatVFS, r.Filepath, "", nil)
	return &sftp.StatVFS{
		Bsize: 1, Frsize: 1,
		Blocks: size + statVFSUsed, Bfree: size, Bavail: size,
		Files: 1 << 20, Ffree: 1 << 20, Favail: 1 << 20,
		Namemax: 255,
	}, nil
}

// setstat serves SETSTAT and FSETSTAT, unless a quirk refuses them.
func (h *handlers) setstat(r *sftp.Request) error {
	q := h.conn.srv.Quirks()
	switch {
	case q.DenySetstat:
		h.log.Info("sftpd quirk: setstat denied", logFault, "DenySetstat", logPath, r.Filepath)
		return sftp.ErrSSHFxPermissionDenied
	case q.SetstatUnsupported:
		h.log.Info("sftpd quirk: setstat unsupported", logFault, "SetstatUnsupported", logPath, r.Filepath)
		return sftp.ErrSSHFxOpUnsupported
	}
	flags, attrs := r.AttrFlags(), r.Attributes()
	if flags.Size {
		if err := os.Truncate(r.Filepath, int64(attrs.Size)); err != nil {
			return err
		}
	}
	if flags.Permissions {
		if err := os.Chmod(r.Filepath, attrs.FileMode().Perm()); err != nil {
			return err
		}
	}
	if flags.Acmodtime {
		if err := os.Chtimes(r.Filepath, attrs.AccessTime(), attrs.ModTime()); err != nil {
			return err
		}
	}
	// Ownership changes are ignored: the server runs as one user.
	return nil
}

// Filelist serves directory listings and stat.
func (h *handlers) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		entries, err := os.ReadDir(r.Filepath)
		if err != nil {
			return nil, err
		}
		infos := make(listerAt, 0, len(entries))
		for _, e := range entries {
			if fi, err := e.Info(); err == nil { // an entry removed meanwhile is left out
				infos = append(infos, fi)
			}
		}
		return infos, nil
	case "Stat":
		fi, err := os.Stat(r.Filepath)
		if err != nil {
			return nil, h.record(OpStat, r.Filepath, "", err)
		}
		h.record(OpStat, r.Filepath, "", nil)
		return listerAt{fi}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

// Lstat is stat without following a final symlink.
func (h *handlers) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	fi, err := os.Lstat(r.Filepath)
	if err != nil {
		return nil, h.record(OpLstat, r.Filepath, "", err)
	}
	h.record(OpLstat, r.Filepath, "", nil)
	return listerAt{fi}, nil
}

// Readlink returns a symlink's target.
func (h *handlers) Readlink(p string) (string, error) {
	return os.Readlink(p)
}

// RealPath canonicalizes p as OpenSSH's sftp-server does: relative to home,
// symlinks resolved, and only the last component may be missing ("." is the
// home directory).
func (h *handlers) RealPath(p string) (string, error) {
	if !path.IsAbs(p) {
		p = path.Join(h.home, p)
	}
	p = path.Clean(p)
	resolved, err := filepath.EvalSymlinks(p)
	if err == nil {
		return resolved, nil
	}
	if !errors.Is(err, fs.ErrNotExist) || p == "/" {
		return "", err
	}
	dir, err := filepath.EvalSymlinks(path.Dir(p))
	if err != nil {
		return "", err
	}
	return path.Join(dir, path.Base(p)), nil
}

// pathErr wraps a raw errno like the os package does.
func pathErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: op, Path: p, Err: err}
}

// listerAt serves a fixed list of file infos.
type listerAt []fs.FileInfo

func (l listerAt) ListAt(dst []fs.FileInfo, offset int64) (int, error) {
	if offset >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(dst, l[offset:])
	if offset+int64(n) >= int64(len(l)) {
		return n, io.EOF
	}
	return n, nil
}

// file is a file open for writing, where the write faults act. pkg/sftp
// calls WriteAt from several goroutines at once.
type file struct {
	*os.File
	h   *handlers
	log *slog.Logger

	received atomic.Int64 // bytes of file data received
}

// Close closes the file when the client closes its handle (or the session
// ends).
func (f *file) Close() error {
	f.h.mu.Lock()
	delete(f.h.files, f)
	f.h.mu.Unlock()
	return f.h.record(OpClose, f.Name(), "", f.File.Close())
}

// WriteAt stores p at off, unless a fault says otherwise.
func (f *file) WriteAt(p []byte, off int64) (int, error) {
	c := f.h.conn
	c.srv.writeBegan()
	defer c.srv.writeEnded()
	faults := c.srv.Faults()
	if faults.WriteDelay > 0 {
		c.sleep(faults.WriteDelay)
	}

	total := f.received.Add(int64(len(p)))

	if n := faults.DisconnectAfter; n > 0 && total >= n {
		f.log.Info("sftpd fault: closing the connection", logFault, "DisconnectAfter", logPath, f.Name(), "received", total)
		c.drop()
		return 0, sftp.ErrSSHFxConnectionLost
	}
	if n := faults.HangAfter; n > 0 && total >= n {
		f.log.Info("sftpd fault: connection frozen", logFault, "HangAfter", logPath, f.Name(), "received", total)
		c.hang()
	}
	if n := faults.DiskFullAfter; n > 0 && off+int64(len(p)) > n {
		f.log.Info("sftpd fault: disk full", logFault, "DiskFullAfter", logPath, f.Name(), "offset", off)
		if off < n {
			_, _ = f.File.WriteAt(p[:n-off], off)
		}
		return 0, sftp.ErrSSHFxFailure
	}
	n, err := f.File.WriteAt(p, off)
	c.srv.mu.Lock()
	c.srv.stats.BytesWritten += int64(n)
	c.srv.mu.Unlock()
	return n, err
}
