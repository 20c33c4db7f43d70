package watcher

import (
	"bytes"
	"errors"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// leaseProbe asks for a read lease on q and releases it.
func leaseProbe(q writerQuery) writerResult {
	fd, err := unix.Open(q.path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return writerResult{unreadable: errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || (devIno{uint64(st.Dev), st.Ino}) != q.id || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return writerResult{} // replaced since it was stat'ed; the next check sees the change
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_RDLCK)
	switch {
	case err == nil:
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK)
		return writerResult{state: writerNone}
	case errors.Is(err, unix.EAGAIN):
		return writerResult{state: writerOpen}
	default: // EACCES/EPERM: not the owner; EINVAL: no lease support here
		return writerResult{leaseDenied: errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)}
	}
}

// scanProc walks /proc/*/fd once and returns which of the wanted inodes are
// open for writing, and how many processes' descriptors it could not read.
func (c *writerCheck) scanProc(want map[devIno][]int) (writers map[devIno]bool, hidden int) {
	writers = make(map[devIno]bool)
	d, err := os.Open(c.procRoot)
	if err != nil {
		return writers, 1
	}
	pids, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return writers, 1
	}
	for _, pid := range pids {
		if pid == "" || pid[0] < '0' || pid[0] > '9' {
			continue
		}
		ok := c.scanPid(pid, want, writers)
		if !ok {
			hidden++
		}
	}
	return writers, hidden
}

// scanPid scans one process's descriptors; false means they were not
// readable (a process that exited meanwhile counts as scanned).
func (c *writerCheck) scanPid(pid string, want map[devIno][]int, writers map[devIno]bool) bool {
	dir := c.procRoot + "/" + pid + "/fd"
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
	}
	f := os.NewFile(uintptr(dfd), dir)
	defer f.Close()
	fds, err := f.Readdirnames(-1)
	if err != nil && len(fds) == 0 {
		return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
	}
	for _, fd := range fds {
		// AT_STATX_DONT_SYNC: take cached attributes, so a descriptor on a
		// dead network mount cannot hang the scan.
		var stx unix.Statx_t
		if err := unix.Statx(dfd, fd, unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &stx); err != nil {
			continue
		}
		id := devIno{unix.Mkdev(stx.Dev_major, stx.Dev_minor), stx.Ino}
		if _, ok := want[id]; !ok || writers[id] {
			continue
		}
		flags, err := fdFlags(c.procRoot + "/" + pid + "/fdinfo/" + fd)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				writers[id] = true // open on our file, mode unknown: assume the worst
			}
			continue
		}
		if acc := flags & unix.O_ACCMODE; acc == unix.O_WRONLY || acc == unix.O_RDWR {
			writers[id] = true
		}
	}
	return true
}

// fdFlags reads the open flags ("flags:\t0100001", octal) of one descriptor.
func fdFlags(fdinfo string) (int, error) {
	b, err := os.ReadFile(fdinfo)
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		v, ok := bytes.CutPrefix(line, []byte("flags:"))
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 8, 32)
		if err != nil {
			return 0, err
		}
		return int(n), nil
	}
	return 0, errors.New("no flags line in " + fdinfo)
}
