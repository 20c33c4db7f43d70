package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dropship/dropship/internal/journal"
	"github.com/dropship/dropship/transfer"
)

// openChecked opens the file of rec for sending, beneath the watch folder
// root, and checks that it is the version readiness judged: the one read of
// the file that the upload and its sha256 both use.
//
// Everything in a watch folder is written by someone who may be hostile, who
// can swap the file for a symlink, a hard link or a directory at any moment.
// So the file is opened with openat2(2) from a descriptor of the root, with
// RESOLVE_BENEATH (no ".." or absolute path out of the root) and, unless
// follow_symlinks is set, RESOLVE_NO_SYMLINKS at every component: a symlink
// swapped in anywhere on the path makes the open fail instead of leading
// outside. With follow_symlinks the link is resolved first and must stay
// inside the root; its target is then opened the same way, so a swap after
// the resolution fails too. O_NONBLOCK keeps a FIFO swapped in from blocking
// the open. The descriptor is then fstat-ed: it must be a regular file with
// the device, inode, size and mtime readiness recorded. Without
// follow_symlinks, a file with more than one hard link, or on another device
// than the root, is refused: a hard link may be a second name of a file
// outside the watch folder.
//
// The error is a *transfer.Error of class unsafe-path (the path leads outside
// the root or to something that is not a regular file), local-changed (a
// different version than the one judged ready), or local-file (unreadable),
// or an error satisfying errors.Is(err, os.ErrNotExist) when the file is gone.
func openChecked(root string, follow bool, rec *journal.Record) (*os.File, error) {
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &transfer.Error{Class: transfer.ClassLocalFile, Message: fmt.Sprintf("open the watch folder %s: %v", root, err), ExitCode: -1}
	}
	defer unix.Close(rootFD)
	var rootSt unix.Stat_t
	if err := unix.Fstat(rootFD, &rootSt); err != nil {
		return nil, &transfer.Error{Class: transfer.ClassLocalFile, Message: fmt.Sprintf("stat the watch folder %s: %v", root, err), ExitCode: -1}
	}
	rel := filepath.FromSlash(rec.Rel)
	if follow {
		rel, err = resolveBeneath(root, rel)
		if err != nil {
			return nil, err
		}
	}
	how := &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(rootFD, rel, how)
	if errors.Is(err, unix.ENOSYS) {
		fd, err = openNoFollow(rootFD, rel)
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("open %s: %w", rec.Path, os.ErrNotExist)
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTDIR):
			return nil, unsafePath(rec, "a symbolic link (or something that is not a folder) is on its path, which is refused so that nothing outside the watch folder is ever sent")
		}
		return nil, &transfer.Error{Class: transfer.ClassLocalFile, Message: fmt.Sprintf("open %s: %v", rec.Path, err), ExitCode: -1}
	}
	f := os.NewFile(uintptr(fd), rec.Path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &transfer.Error{Class: transfer.ClassLocalFile, Message: fmt.Sprintf("stat %s: %v", rec.Path, err), ExitCode: -1}
	}
	reject := func(e error) (*os.File, error) {
		f.Close()
		return nil, e
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return reject(unsafePath(rec, "it is no longer a regular file"))
	}
	if !follow && st.Nlink > 1 {
		return reject(unsafePath(rec, fmt.Sprintf("it has %d hard links, and a hard link may be a second name of a file outside the watch folder (set follow_symlinks = true to allow links that stay inside it)", st.Nlink)))
	}
	if !follow && st.Dev != rootSt.Dev {
		return reject(unsafePath(rec, "it is on another file system than the watch folder"))
	}
	if uint64(st.Dev) != rec.Dev || st.Ino != rec.Inode || st.Size != rec.Size || !sameTime(st.Mtim, rec) {
		return reject(&transfer.Error{Class: transfer.ClassLocalChanged, Message: fmt.Sprintf("%s: it is not the version that was judged ready (replaced or rewritten since)", rec.Path), ExitCode: -1})
	}
	// Reads block as usual from here on.
	if err := unix.SetNonblock(fd, false); err != nil {
		return reject(&transfer.Error{Class: transfer.ClassLocalFile, Message: fmt.Sprintf("open %s: %v", rec.Path, err), ExitCode: -1})
	}
	return f, nil
}

func sameTime(ts unix.Timespec, rec *journal.Record) bool {
	return ts.Sec == rec.ModTime.Unix() && ts.Nsec == int64(rec.ModTime.Nanosecond())
}

// resolveBeneath resolves the symlinks of rel below root (follow_symlinks =
// true) and returns the resolved path relative to root; a link that leads out
// of root is an unsafe-path error.
func resolveBeneath(root, rel string) (string, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", &transfer.Error{Class: transfer.ClassLocalFile, Message: fmt.Sprintf("resolve the watch folder %s: %v", root, err), ExitCode: -1}
	}
	p, err := filepath.EvalSymlinks(filepath.Join(root, rel))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("resolve %s: %w", filepath.Join(root, rel), os.ErrNotExist)
		}
		return "", &transfer.Error{Class: transfer.ClassLocalFile, Message: fmt.Sprintf("resolve %s: %v", filepath.Join(root, rel), err), ExitCode: -1}
	}
	out, err := filepath.Rel(realRoot, p)
	if err != nil || out == ".." || strings.HasPrefix(out, ".."+string(filepath.Separator)) || filepath.IsAbs(out) {
		return "", &transfer.Error{Class: transfer.ClassUnsafePath, Message: fmt.Sprintf("%s leads outside the watch folder (to %s); refused even with follow_symlinks = true", filepath.Join(root, rel), p), ExitCode: -1}
	}
	return out, nil
}

// openNoFollow is openat2 for kernels without it (before 5.6): each component
// is opened with O_NOFOLLOW from the one before, so no symlink is followed
// and ".." is refused.
func openNoFollow(rootFD int, rel string) (int, error) {
	parts := strings.Split(rel, string(filepath.Separator))
	dir := rootFD
	for i, name := range parts {
		if name == "" || name == "." || name == ".." {
			if dir != rootFD {
				unix.Close(dir)
			}
			return -1, unix.EXDEV
		}
		last := i == len(parts)-1
		flags := unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			flags |= unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY
		} else {
			flags |= unix.O_PATH | unix.O_DIRECTORY
		}
		fd, err := unix.Openat(dir, name, flags, 0)
		if dir != rootFD {
			unix.Close(dir)
		}
		if err != nil {
			return -1, err
		}
		dir = fd
	}
	return dir, nil
}

// unsafePath is the failure of a file whose path leads somewhere dropship
// must not read.
func unsafePath(rec *journal.Record, why string) error {
	return &transfer.Error{Class: transfer.ClassUnsafePath, Message: fmt.Sprintf("%s: not sent: %s", rec.Path, why), ExitCode: -1}
}
