// Package sftpd is a small SSH/SFTP server built on golang.org/x/crypto/ssh
// and github.com/pkg/sftp. It serves `dropship run -dev` and the tests that
// need what a stock sshd cannot easily give: password and keyboard-interactive
// logins without system accounts, injected faults (see Faults), and the
// quirks of other SFTP servers (see Quirks).
//
// It speaks what the OpenSSH clients need: the "sftp" subsystem on any number
// of session channels per connection (so a ControlMaster can multiplex
// sessions), the extensions posix-rename@openssh.com, statvfs@openssh.com,
// hardlink@openssh.com and fsync@openssh.com, and replies to keepalive
// requests so that ServerAliveInterval works. Requests for a shell, a command
// or a pty are refused. Files are served from the real file system without a
// jail, with the permissions of the process running the server.
//
// For tests, Server.Stats counts logins and SFTP requests, and Server.Ops
// logs the order of operations (open, fsync, close, rename, ...) per path.
package sftpd
