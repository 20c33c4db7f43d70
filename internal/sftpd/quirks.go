package sftpd

import (
	"path"
	"slices"
)

// Quirks make the server behave like SFTP servers other than OpenSSH's
// sftp-server, the way a client must cope with in the field. Unlike Faults,
// they are not failures of the server or the network but differences in
// what it offers and in the semantics of its requests. The zero value is a
// server like OpenSSH's sftp-server:
//
//   - the SSH_FXP_VERSION reply offers posix-rename@openssh.com "1",
//     statvfs@openssh.com "2", hardlink@openssh.com "1" and
//     fsync@openssh.com "1", and all four are served;
//   - a plain SSH_FXP_RENAME onto an existing name fails with SSH_FX_FAILURE
//     (message "file exists") and leaves both files alone, as SFTPv3
//     specifies; posix-rename@openssh.com replaces the target atomically;
//   - SETSTAT and FSETSTAT work;
//   - statvfs@openssh.com reports the real file system of the path;
//   - a renamed file stays where the client put it.
//
// The extension fields (NoPosixRename, NoStatVFS, NoFSync, NoExtensions)
// act per SFTP session: a session keeps what it was offered when it started
// (the "sftp" subsystem request), so that what a client reads in
// SSH_FXP_VERSION and what the server serves agree. A request for an
// extension the session was not offered fails with SSH_FX_OP_UNSUPPORTED,
// as from a server that does not know it. The other fields act on each
// request as it arrives.
//
// The extension list is sent by rewriting the server's SSH_FXP_VERSION
// packet per session, so github.com/pkg/sftp's package-level extension list
// (sftp.SetSFTPExtensions) is never changed, and servers with different
// quirks can run in parallel in one process.
//
// What github.com/pkg/sftp's client sees (StatusError codes are those of
// *sftp.StatusError.FxCode(); the client maps "Permission denied" to
// os.ErrPermission and "No such file" to os.ErrNotExist):
//
//	NoPosixRename       HasExtension("posix-rename@openssh.com") false; PosixRename: SSH_FX_OP_UNSUPPORTED
//	NoStatVFS           HasExtension("statvfs@openssh.com") false; StatVFS: SSH_FX_OP_UNSUPPORTED
//	NoFSync             HasExtension("fsync@openssh.com") false; File.Sync: SSH_FX_OP_UNSUPPORTED
//	                    "fsync not supported" (decided by the client, nothing is sent)
//	NoExtensions        all three, and Link (hardlink@openssh.com): SSH_FX_OP_UNSUPPORTED
//	RenameReplaces      Rename onto an existing name succeeds and replaces it
//	DenySetstat         Chmod, Chtimes, Chown, Truncate and their File methods: os.ErrPermission
//	SetstatUnsupported  the same calls: SSH_FX_OP_UNSUPPORTED
//	PickUpRenamed       Rename or PosixRename succeeds; Stat/Open of the new name: os.ErrNotExist
//	FreeSpace           StatVFS: FreeSpace() and Bavail*Frsize are FreeSpace bytes
//
// What OpenSSH's sftp 9.2 prints (stderr; in batch mode the command fails,
// exit 1, unless it is prefixed with "-"):
//
//	NoPosixRename       rename uses SSH_FXP_RENAME; onto an existing name:
//	                    remote rename "OLD" to "NEW": Failure
//	NoStatVFS           df: Server does not support statvfs@openssh.com extension
//	NoFSync             put -f: nothing; the upload works without fsync
//	NoExtensions        ln: Server does not support hardlink@openssh.com extension
//	DenySetstat         chmod: remote setstat "PATH": Permission denied
//	                    put -p: remote fsetstat: Permission denied (and exit 0: the upload stands)
//	SetstatUnsupported  chmod: remote setstat "PATH": Operation unsupported
//	PickUpRenamed       ls NEW after rename: Can't ls: "NEW" not found
//	FreeSpace           df: Avail is FreeSpace/1024 (1K blocks)
type Quirks struct {
	// NoPosixRename stops offering posix-rename@openssh.com. A client must
	// then use plain SSH_FXP_RENAME, which does not replace an existing
	// target (unless RenameReplaces), so it must remove the target first
	// to overwrite.
	NoPosixRename bool

	// NoStatVFS stops offering statvfs@openssh.com: a client cannot learn
	// the free space.
	NoStatVFS bool

	// NoFSync stops offering fsync@openssh.com: a client cannot make the
	// server flush a file before renaming it.
	NoFSync bool

	// NoExtensions offers no extension at all: SSH_FXP_VERSION carries
	// version 3 and nothing else, like a minimal SFTPv3 server. It implies
	// NoPosixRename, NoStatVFS and NoFSync, and hardlink@openssh.com is
	// refused too.
	NoExtensions bool

	// RenameReplaces makes plain SSH_FXP_RENAME replace an existing target,
	// as rename(2) does and as some servers do although SFTPv3 says
	// otherwise. RejectRename (a fault) still wins.
	RenameReplaces bool

	// DenySetstat makes every SETSTAT and FSETSTAT (chmod, chown, utimes,
	// truncate) fail with "Permission denied", as on servers that do not
	// let users change attributes. Opening with attributes still works.
	DenySetstat bool

	// SetstatUnsupported makes every SETSTAT and FSETSTAT fail with
	// SSH_FX_OP_UNSUPPORTED ("Operation unsupported"). DenySetstat wins
	// when both are set.
	SetstatUnsupported bool

	// PickUpRenamed makes a partner's pickup process take every regular
	// file as soon as a rename (plain or posix-rename) puts it in place: the
	// server renames, then removes the file (or moves it into PickupDir)
	// before it answers the rename with success. A client that stats or
	// opens the final name afterwards gets "no such file".
	PickUpRenamed bool

	// PickUpPattern, when not empty, limits PickUpRenamed to files whose
	// base name matches this path.Match pattern, e.g. "*.csv".
	PickUpPattern string

	// PickupDir, when not empty, is where PickUpRenamed moves the files it
	// takes (under their base names, replacing older ones) instead of
	// removing them, so that a test can check what was delivered. It must
	// be on the same file system as the files.
	PickupDir string

	// FreeSpace is the free space statvfs@openssh.com reports, in bytes:
	// when > 0, f_bfree and f_bavail are FreeSpace, with f_bsize and
	// f_frsize 1 (so that they are bytes whichever block size a client
	// multiplies by) and f_blocks FreeSpace + 1 GiB (1 GiB used); when < 0,
	// the same with nothing free, a full disk; when 0, the real file system
	// of the path. It does not shrink as files are written.
	FreeSpace int64
}

// SetQuirks replaces the quirks in effect. It is safe to call while clients
// are connected: the extension fields act on SFTP sessions started from then
// on, the others on the next request.
func (s *Server) SetQuirks(q Quirks) {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	s.quirks = q
}

// Quirks returns the quirks in effect.
func (s *Server) Quirks() Quirks {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	return s.quirks
}

// Extension names and the versions the server offers, in OpenSSH's order.
const (
	extPosixRename = "posix-rename@openssh.com"
	extStatVFS     = "statvfs@openssh.com"
	extHardlink    = "hardlink@openssh.com"
	extFSync       = "fsync@openssh.com"
)

// extension is one name and data pair of SSH_FXP_VERSION.
type extension struct{ name, data string }

// extensions are the extensions a session with these quirks offers.
func (q Quirks) extensions() []extension {
	if q.NoExtensions {
		return nil
	}
	var exts []extension
	if !q.NoPosixRename {
		exts = append(exts, extension{extPosixRename, "1"})
	}
	if !q.NoStatVFS {
		exts = append(exts, extension{extStatVFS, "2"})
	}
	exts = append(exts, extension{extHardlink, "1"})
	if !q.NoFSync {
		exts = append(exts, extension{extFSync, "1"})
	}
	return exts
}

// offers reports whether the extension is in exts.
func offers(exts []extension, name string) bool {
	return slices.ContainsFunc(exts, func(e extension) bool { return e.name == name })
}

// pickUp reports whether PickUpRenamed takes a file renamed to target.
func (q Quirks) pickUp(target string) bool {
	if !q.PickUpRenamed {
		return false
	}
	if q.PickUpPattern == "" {
		return true
	}
	ok, _ := path.Match(q.PickUpPattern, path.Base(target))
	return ok
}
