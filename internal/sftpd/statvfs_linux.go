package sftpd

import (
	"syscall"

	"github.com/pkg/sftp"
)

// realStatVFS is statvfs(3) of the file system that holds p.
func realStatVFS(p string) (*sftp.StatVFS, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(p, &st); err != nil {
		return nil, pathErr("statfs", p, err)
	}
	return &sftp.StatVFS{
		Bsize:   uint64(st.Bsize),
		Frsize:  uint64(st.Frsize),
		Blocks:  st.Blocks,
		Bfree:   st.Bfree,
		Bavail:  st.Bavail,
		Files:   st.Files,
		Ffree:   st.Ffree,
		Favail:  st.Ffree,             // Linux has no f_favail apart from f_ffree
		Flag:    uint64(st.Flags) & 3, // ST_RDONLY and ST_NOSUID, the flags the extension defines
		Namemax: uint64(st.Namelen),
	}, nil
}
