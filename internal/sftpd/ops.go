package sftpd

// Op kinds: the requests the server records in its operation log (see
// Server.Ops). Reads and writes of file data, directory listings, readlink
// and realpath are not recorded.
const (
	OpOpen        = "open"         // open for writing (SSH_FXP_OPEN with a write flag)
	OpRead        = "read"         // open for reading only
	OpClose       = "close"        // close of a file opened for writing
	OpSetstat     = "setstat"      // SSH_FXP_SETSTAT or SSH_FXP_FSETSTAT (Path is the file's)
	OpFSync       = "fsync"        // fsync@openssh.com (Path is the open file's)
	OpRename      = "rename"       // SSH_FXP_RENAME, Path to Target
	OpPosixRename = "posix-rename" // posix-rename@openssh.com, Path to Target
	OpPickUp      = "pickup"       // Quirks.PickUpRenamed took Path (to Target, or removed it when Target is "")
	OpStatVFS     = "statvfs"      // statvfs@openssh.com
	OpStat        = "stat"         // SSH_FXP_STAT or SSH_FXP_FSTAT
	OpLstat       = "lstat"        // SSH_FXP_LSTAT
	OpRemove      = "remove"       // SSH_FXP_REMOVE
	OpMkdir       = "mkdir"        // SSH_FXP_MKDIR
	OpRmdir       = "rmdir"        // SSH_FXP_RMDIR
	OpLink        = "link"         // hardlink@openssh.com, Path to Target
	OpSymlink     = "symlink"      // SSH_FXP_SYMLINK: a link at Target pointing to Path
)

// maxOps bounds the operation log; later operations are not recorded.
const maxOps = 10000

// Op is one request the server handled, in the order the server handled
// them. pkg/sftp serves the requests of one session that are not reads or
// writes one at a time, in the order they arrived, so the log shows a
// client's order of operations on a path (e.g. fsync before rename).
type Op struct {
	Kind   string // one of the Op constants, e.g. OpRename
	Path   string // absolute path on the server
	Target string // the new name of renames and links; "" otherwise
	Err    error  // what the server answered: nil for success, else e.g. sftp.ErrSSHFxOpUnsupported or an *os.PathError
}

// Ops returns a copy of the operation log since New: the first 10000
// recorded operations of all sessions.
func (s *Server) Ops() []Op {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Op(nil), s.ops...)
}

// OpsOn returns the operations whose Path or Target is p, in order.
func (s *Server) OpsOn(p string) []Op {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ops []Op
	for _, op := range s.ops {
		if op.Path == p || op.Target == p {
			ops = append(ops, op)
		}
	}
	return ops
}

// record appends op to the log and counts it in Stats, and returns op.Err.
func (s *Server) record(op Op) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ops) < maxOps {
		s.ops = append(s.ops, op)
	}
	switch op.Kind {
	case OpRename:
		s.stats.Renames++
	case OpPosixRename:
		s.stats.PosixRenames++
	case OpFSync:
		s.stats.FSyncs++
	case OpSetstat:
		s.stats.Setstats++
	case OpStatVFS:
		s.stats.StatVFS++
	case OpPickUp:
		if op.Err == nil {
			s.stats.PickedUp++
		}
	}
	return op.Err
}
