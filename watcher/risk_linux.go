package watcher

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Capability bits, as in linux/capability.h.
const (
	capSysPtrace = 19
	capLease     = 28
)

// SelfAbilities returns the abilities of this process.
func SelfAbilities() Abilities {
	ab, err := AbilitiesOf(os.Getpid())
	if err != nil {
		// Without /proc, /proc cannot be scanned either; leases are
		// then the only hope, and only root is sure to have them.
		return Abilities{UID: os.Geteuid(), Lease: os.Geteuid() == 0}
	}
	return ab
}

// AbilitiesOf reads the abilities of process pid from /proc/PID/status
// (its effective user id and capabilities).
func AbilitiesOf(pid int) (Abilities, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Abilities{}, err
	}
	defer f.Close()
	ab := Abilities{UID: -1}
	var capsSeen bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		switch {
		case k == "Uid" && len(fields) >= 2:
			ab.UID, _ = strconv.Atoi(fields[1])
		case k == "CapEff" && len(fields) == 1:
			eff, err := strconv.ParseUint(fields[0], 16, 64)
			if err != nil {
				return Abilities{}, fmt.Errorf("/proc/%d/status: CapEff %q: %w", pid, fields[0], err)
			}
			ab.Lease = eff&(1<<capLease) != 0
			ab.AllProcs = eff&(1<<capSysPtrace) != 0
			capsSeen = true
		}
	}
	if err := sc.Err(); err != nil {
		return Abilities{}, err
	}
	if ab.UID < 0 || !capsSeen {
		return Abilities{}, fmt.Errorf("/proc/%d/status: no Uid or CapEff line", pid)
	}
	return ab, nil
}

// remoteFSNames are the file systems whose files can change without an
// inotify event or a lease on this machine, by statfs magic number.
var remoteFSNames = map[int64]string{
	unix.NFS_SUPER_MAGIC:   "NFS",
	unix.CIFS_SUPER_MAGIC:  "CIFS/SMB",
	unix.SMB2_SUPER_MAGIC:  "SMB",
	unix.SMB_SUPER_MAGIC:   "SMB",
	unix.FUSE_SUPER_MAGIC:  "FUSE (sshfs, s3fs, …)",
	unix.V9FS_MAGIC:        "9p",
	unix.CEPH_SUPER_MAGIC:  "Ceph",
	unix.AFS_SUPER_MAGIC:   "AFS",
	unix.AFS_FS_MAGIC:      "AFS",
	unix.CODA_SUPER_MAGIC:  "Coda",
	unix.OCFS2_SUPER_MAGIC: "OCFS2",
	0x01161970:             "GFS2",
	0x0bd00bd0:             "Lustre",
	0x47504653:             "GPFS",
	0x19830326:             "FhGFS/BeeGFS",
}

// remoteFS names the file system of root when it is one of remoteFSNames,
// else "".
func remoteFS(root string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return ""
	}
	return remoteFSNames[int64(st.Type)]
}
