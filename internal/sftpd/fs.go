package sftpd

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
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
}

var (
	_ sftp.FileReader           = (*handlers)(nil)
	_ sftp.OpenFileWriter       = (*handlers)(nil)
	_ sftp.PosixRenameFileCmder = (*handlers)(nil)
	_ sftp.LstatFileLister      = (*handlers)(nil)
	_ sftp.RealPathFileLister   = (*handlers)(nil)
	_ sftp.ReadlinkFileLister   = (*handlers)(nil)
)

// Fileread opens a file for a download.
func (h *handlers) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return os.Open(r.Filepath)
}

// Filewrite opens a file for an upload.
func (h *handlers) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	return h.openWrite(r, os.O_WRONLY)
}

// OpenFile opens a file for reading and writing.
func (h *handlers) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	return h.openWrite(r, os.O_RDWR)
}

func (h *handlers) openWrite(r *sftp.Request, mode int) (*file, error) {
	if f := h.conn.srv.Faults(); f.DenyWrite {
		h.log.Info("sftpd fault: open for writing denied", logFault, "DenyWrite", logPath, r.Filepath)
		return nil, sftp.ErrSSHFxPermissionDenied
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
	f, err := os.OpenFile(r.Filepath, flags, perm)
	if err != nil {
		return nil, err
	}
	return &file{File: f, conn: h.conn, log: h.log}, nil
}

// Filecmd carries out setstat, rename, mkdir, rmdir, remove, link and
// symlink requests.
func (h *handlers) Filecmd(r *sftp.Request) error {
	switch r.Method {
	case "Setstat":
		return setstat(r)
	case "Rename":
		// SSH_FXP_RENAME does not replace an existing target (OpenSSH's
		// sftp-server answers "Failure"); posix-rename does.
		if err := h.renameFault(r); err != nil {
			return err
		}
		if _, err := os.Lstat(r.Target); err == nil {
			return sftp.ErrSSHFxFailure
		}
		return os.Rename(r.Filepath, r.Target)
	case "Mkdir":
		perm := fs.FileMode(0o777)
		if r.AttrFlags().Permissions {
			perm = r.Attributes().FileMode().Perm()
		}
		return os.Mkdir(r.Filepath, perm)
	case "Rmdir":
		return pathErr("rmdir", r.Filepath, syscall.Rmdir(r.Filepath))
	case "Remove":
		return pathErr("remove", r.Filepath, syscall.Unlink(r.Filepath))
	case "Link":
		return os.Link(r.Filepath, r.Target)
	case "Symlink":
		// pkg/sftp puts the link's target in Filepath and its name in Target.
		return os.Symlink(r.Filepath, r.Target)
	}
	return sftp.ErrSSHFxOpUnsupported
}

// PosixRename is posix-rename@openssh.com: an atomic rename(2) that replaces
// the target. OpenSSH's sftp uses it for "rename" when offered.
func (h *handlers) PosixRename(r *sftp.Request) error {
	if err := h.renameFault(r); err != nil {
		return err
	}
	return os.Rename(r.Filepath, r.Target)
}

func (h *handlers) renameFault(r *sftp.Request) error {
	if h.conn.srv.Faults().RejectRename {
		h.log.Info("sftpd fault: rename rejected", logFault, "RejectRename", logPath, r.Filepath)
		return sftp.ErrSSHFxPermissionDenied
	}
	return nil
}

func setstat(r *sftp.Request) error {
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
			return nil, err
		}
		return listerAt{fi}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

// Lstat is stat without following a final symlink.
func (h *handlers) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	fi, err := os.Lstat(r.Filepath)
	if err != nil {
		return nil, err
	}
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
	conn *conn
	log  *slog.Logger

	received atomic.Int64 // bytes of file data received
}

// WriteAt stores p at off, unless a fault says otherwise.
func (f *file) WriteAt(p []byte, off int64) (int, error) {
	faults := f.conn.srv.Faults()
	if faults.WriteDelay > 0 {
		f.conn.sleep(faults.WriteDelay)
	}

	total := f.received.Add(int64(len(p)))

	if n := faults.DisconnectAfter; n > 0 && total >= n {
		f.log.Info("sftpd fault: closing the connection", logFault, "DisconnectAfter", logPath, f.Name(), "received", total)
		f.conn.drop()
		return 0, sftp.ErrSSHFxConnectionLost
	}
	if n := faults.HangAfter; n > 0 && total >= n {
		f.log.Info("sftpd fault: connection frozen", logFault, "HangAfter", logPath, f.Name(), "received", total)
		f.conn.hang()
	}
	if n := faults.DiskFullAfter; n > 0 && off+int64(len(p)) > n {
		f.log.Info("sftpd fault: disk full", logFault, "DiskFullAfter", logPath, f.Name(), "offset", off)
		if off < n {
			_, _ = f.File.WriteAt(p[:n-off], off)
		}
		return 0, sftp.ErrSSHFxFailure
	}
	return f.File.WriteAt(p, off)
}
