// Package transfer runs the real OpenSSH clients (scp, sftp, ssh) under a
// pseudo-terminal and turns what they print into lines, progress frames,
// answered prompts and typed results.
//
// It owns the argv of every client it starts, the host-key policy, prompt
// answering (password, keyboard-interactive, passphrase, host key), the
// connection a target's transfers share, and the classification of failures
// into classes the caller can act on. It knows nothing about folders, queues
// or NATS.
package transfer
