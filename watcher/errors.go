package watcher

import (
	"errors"
	"fmt"
)

// Kind classifies an operational problem sent on [Watcher.Errors].
type Kind int

const (
	// KindOverflow: the kernel's inotify queue overflowed and events were
	// lost. The watcher rescans the whole root by itself; nothing is missed.
	// The error wraps fsnotify.ErrEventOverflow.
	KindOverflow Kind = iota + 1
	// KindWatchLimit: inotify_add_watch failed with ENOSPC, the per-user
	// watch limit (fs.inotify.max_user_watches) is reached. Folders that
	// could not be watched are polled instead (see [Watcher]). The error
	// wraps syscall.ENOSPC.
	KindWatchLimit
	// KindUnreadableDir: a folder could not be watched or listed (permission
	// denied, I/O error). It is retried on the next poll or rescan.
	KindUnreadableDir
	// KindRootGone: the watched root was deleted or moved away. The watcher
	// polls for it to come back.
	KindRootGone
	// KindRootBack: the watched root exists again and is watched and
	// scanned again. Informational.
	KindRootBack
	// KindSymlinkOutside: a symbolic link points outside the watched root
	// (or into a Skip folder) and is refused: it is never sent.
	KindSymlinkOutside
	// KindWriterCheck: the watcher cannot see whether some files are still
	// open for writing (no lease permission and other users' /proc entries
	// are hidden), so for those files readiness rests on the settle period
	// alone. Sent once per Watcher.
	KindWriterCheck
	// KindInternal: any other error reported by fsnotify.
	KindInternal
)

var kindNames = map[Kind]string{
	KindOverflow:       "overflow",
	KindWatchLimit:     "watch-limit",
	KindUnreadableDir:  "unreadable-dir",
	KindRootGone:       "root-gone",
	KindRootBack:       "root-back",
	KindSymlinkOutside: "symlink-outside",
	KindWriterCheck:    "writer-check",
	KindInternal:       "internal",
}

// String returns a short stable name, suitable as a log attribute or metric
// label: "overflow", "watch-limit", "unreadable-dir", "root-gone",
// "root-back", "symlink-outside", "writer-check", "internal".
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is every error sent on [Watcher.Errors]. None of them stops the
// watcher. Use errors.As to get it and switch on Kind.
type Error struct {
	Kind Kind
	Path string // the folder, file or root concerned
	Msg  string // what happened and what to do, for an operator
	Err  error  // underlying cause, if any
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("watcher: %s: %s: %v", e.Path, e.Msg, e.Err)
	}
	return fmt.Sprintf("watcher: %s: %s", e.Path, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// errRootMissing is wrapped by KindRootGone errors.
var errRootMissing = errors.New("watch root missing")
