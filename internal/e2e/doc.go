// Package e2e holds dropship's end-to-end tests: the built binary, run as a
// subprocess the way an operator runs it (`dropship run`, `check`, `send`,
// `status`, `retry`, `events`), against real parts only: OpenSSH's sshd
// (internal/sshdtest), the built-in SFTP server with its faults
// (internal/sftpd) and an in-process nats-server with JetStream.
//
// The tests assert what a user sees: files under their final names on the
// remote, sources archived or left alone, CloudEvents on NATS subjects, exit
// statuses and printed lines. They include the fault tests of the durability
// promises: an agent killed with SIGKILL, a NATS or sshd outage, refused
// credentials and an unwritable remote folder.
//
// The package has no non-test code. The binary is built once per test run
// (with the race detector when the tests run with -race). Tests that need
// sshd skip without it, unless DROPSHIP_REQUIRE_SSHD=1.
package e2e
