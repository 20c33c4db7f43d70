package watcher

import "time"

// writerState is what the watcher could find out about processes holding a
// file open for writing.
type writerState uint8

const (
	// writerUnknown: nothing could be seen (no lease, no /proc access).
	writerUnknown writerState = iota
	// writerNoneSeen: no writer among the processes /proc let us see, but
	// some processes' file descriptors were hidden.
	writerNoneSeen
	// writerNone: nobody on this machine holds the file open for writing
	// (a read lease was granted, or every process's descriptors were seen).
	writerNone
	// writerOpen: some process holds the file open for writing.
	writerOpen
)

// writerQuery is one file to check: the path to open for the lease probe
// (for a followed symlink, its resolved target) and the inode it must be.
type writerQuery struct {
	path string
	id   devIno
}

// writerResult is the answer for one writerQuery.
type writerResult struct {
	state       writerState
	hidden      int  // processes whose descriptors /proc did not show us
	unreadable  bool // the file could not be opened for reading (EACCES)
	leaseDenied bool // the kernel refused a lease (not the owner, no CAP_LEASE)
	deferred    bool // needs the /proc scan, which ran too recently: ask again at writerCheck.nextProc
}

// writerCheck answers "is anyone writing this file?" for a batch of files.
//
// First, per file, it asks the kernel for a read lease (fcntl F_SETLEASE
// F_RDLCK on a read-only descriptor) and drops it at once: the kernel grants a
// read lease only if no process on the machine has the inode open for
// writing (or mapped writable), whatever its user, container or namespace,
// so a grant means "no writer" and EAGAIN means "a writer". A lease needs the
// file's owner or CAP_LEASE. While the lease is held (microseconds), a
// process opening the file for writing waits for it to be dropped, or gets
// EWOULDBLOCK if it opens with O_NONBLOCK; the lease-break SIGIO is ignored
// by the Go runtime unless the program asked for it with signal.Notify.
//
// For the files the lease could not decide, it does one scan of
// /proc/*/fd for the whole batch, matching descriptors by device and inode
// and reading the access mode from /proc/PID/fdinfo/FD. Processes whose
// descriptors it may not read count as "not visible", not as writers.
// The scan costs about a millisecond per hundred processes; it is kept to at
// most a tenth of the time (after a scan that took d, the next waits 10*d)
// and files that need it meanwhile are deferred.
type writerCheck struct {
	useLease bool
	procRoot string
	nextProc time.Time // earliest next /proc scan
}

func newWriterCheck(useLease bool) *writerCheck {
	return &writerCheck{useLease: useLease, procRoot: "/proc"}
}

func (c *writerCheck) check(qs []writerQuery, now time.Time) []writerResult {
	res := make([]writerResult, len(qs))
	var want map[devIno][]int
	for i, q := range qs {
		if c.useLease {
			res[i] = leaseProbe(q)
			if res[i].state != writerUnknown {
				continue
			}
		}
		if want == nil {
			want = make(map[devIno][]int)
		}
		want[q.id] = append(want[q.id], i)
	}
	if want == nil {
		return res
	}
	if now.Before(c.nextProc) {
		for _, idx := range want {
			for _, i := range idx {
				res[i].deferred = true
			}
		}
		return res
	}
	start := time.Now()
	writers, hidden := c.scanProc(want)
	c.nextProc = start.Add(10 * time.Since(start))
	for id, idx := range want {
		state := writerNone
		switch {
		case writers[id]:
			state = writerOpen
		case hidden > 0:
			state = writerNoneSeen
		}
		for _, i := range idx {
			res[i].state = state
			res[i].hidden = hidden
		}
	}
	return res
}
