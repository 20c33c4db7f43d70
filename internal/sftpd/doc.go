// Package sftpd is a small SSH/SFTP server built on golang.org/x/crypto/ssh
// and github.com/pkg/sftp. It serves `dropship run -dev` and the tests that
// need what a stock sshd cannot easily give: password and keyboard-interactive
// logins without system accounts, and injected faults.
package sftpd
