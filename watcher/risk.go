package watcher

import (
	"fmt"
	"time"
)

// Abilities says what a process can see of other processes' writes, which
// the writer check (see [Watcher]) depends on.
type Abilities struct {
	// UID is the process's effective user id.
	UID int
	// Lease: it may take file leases on files it does not own (CAP_LEASE
	// in its effective set), so it sees any writer of any file.
	Lease bool
	// AllProcs: it may read every process's open files in /proc
	// (CAP_SYS_PTRACE), which stands in for leases where they are refused.
	AllProcs bool
}

// SeesOthersWriters reports whether a process with these abilities can tell
// that a file another user owns is still open for writing.
func (ab Abilities) SeesOthersWriters() bool { return ab.Lease || ab.AllProcs }

// ReadinessRisk says, for a watch of root with the given settle period and
// ready marker, watched by a process with abilities ab, why the readiness of
// some of its files would rest on the settle period alone, what that risks,
// and what to do; "" when nothing is known to be blind. With a ready marker,
// a file is ready only once its marker exists, so there is no such risk.
//
// Two things make readiness blind: a process that can see other users'
// writers neither by lease nor through /proc (no CAP_LEASE, not root), and
// a network or FUSE file system, where writes made on another machine (or
// inside the FUSE daemon) raise no inotify event and hold no lease here.
func ReadinessRisk(root string, settle time.Duration, readyMarker string, ab Abilities) string {
	if readyMarker != "" {
		return ""
	}
	fix := fmt.Sprintf("have writers create a ready marker when a file is complete (ready_marker = \".done\"), or raise settle (now %s) above the longest pause a writer makes", settle)
	if fs := remoteFS(root); fs != "" {
		return fmt.Sprintf("%s is on a %s file system: a file written from another machine raises no inotify event here and cannot be seen open for writing, so its readiness rests on settle (%s) alone and an upload that pauses longer is sent half-written; watch a local folder, or %s", root, fs, settle, fix)
	}
	if !ab.SeesOthersWriters() {
		return fmt.Sprintf("dropship runs as uid %d without CAP_LEASE: it cannot see whether a file another user writes is still open for writing, so the readiness of such files rests on settle (%s) alone and an upload that pauses longer is sent half-written; grant CAP_LEASE (systemd: AmbientCapabilities=CAP_LEASE, as the packaged unit does), or %s", ab.UID, settle, fix)
	}
	return ""
}
