// Package sshdtest starts a real OpenSSH sshd for tests, on a random loopback
// port with its own configuration, host keys and authorized_keys.
//
// Tests that need it are skipped when sshd is not installed, unless
// DROPSHIP_REQUIRE_SSHD=1, which turns the skip into a failure (CI sets it).
//
// sshd logs in the user running the tests, with public keys only. As root it
// uses privilege separation (and creates /run/sshd if needed); as an ordinary
// user it runs without, which works for that user only.
package sshdtest
