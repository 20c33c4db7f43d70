//go:build !linux

package sftpd

import "github.com/pkg/sftp"

// realStatVFS is not implemented off Linux: statvfs@openssh.com reports
// SSH_FX_OP_UNSUPPORTED unless Quirks.FreeSpace is set.
func realStatVFS(string) (*sftp.StatVFS, error) {
	return nil, sftp.ErrSSHFxOpUnsupported
}
