package watcher

import (
	"time"

	"golang.org/x/sys/unix"
)

// stamp is what one stat of a file says about it. Two equal stamps taken a
// moment apart mean nothing changed the inode in between (ctime moves on
// every write, truncate, chmod and rename, even when mtime is forged).
type stamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // nanoseconds since the Unix epoch
	mode         uint32
}

func stampOf(st *unix.Stat_t) stamp {
	return stamp{
		dev:   uint64(st.Dev),
		ino:   uint64(st.Ino),
		size:  st.Size,
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
		mode:  uint32(st.Mode),
	}
}

// lstatStamp stats path without following a final symlink.
func lstatStamp(path string) (stamp, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return stamp{}, err
	}
	return stampOf(&st), nil
}

// statStamp stats path following symlinks.
func statStamp(path string) (stamp, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return stamp{}, err
	}
	return stampOf(&st), nil
}

func (s stamp) fileType() uint32 { return s.mode & unix.S_IFMT }
func (s stamp) isRegular() bool  { return s.fileType() == unix.S_IFREG }
func (s stamp) isDir() bool      { return s.fileType() == unix.S_IFDIR }
func (s stamp) isSymlink() bool  { return s.fileType() == unix.S_IFLNK }

// sameContent reports whether two stamps describe the same reported version
// of a file: same inode, size, mtime and permissions. ctime is left out on
// purpose, so metadata-only changes (an xattr, a link count) do not cause a
// file to be sent again; permissions are in, so fixing an unreadable file
// reports it again.
func (s stamp) sameContent(o stamp) bool {
	return s.dev == o.dev && s.ino == o.ino && s.size == o.size && s.mtime == o.mtime && s.mode == o.mode
}

func (s stamp) modTime() time.Time { return time.Unix(0, s.mtime) }

type devIno struct{ dev, ino uint64 }

func (s stamp) id() devIno { return devIno{s.dev, s.ino} }
