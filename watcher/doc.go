// Package watcher turns activity in a drop folder into a stream of files that
// are ready to send.
//
// It owns everything between the kernel's inotify events and the statement
// "this file is complete": recursion into new folders, include/exclude
// filters, readiness (settle time, stable size and mtime, no writer holding the
// file open, ready markers), the scan of files already present at start, and
// the rescan after an inotify queue overflow. It knows nothing about SSH,
// NATS or what happens to a file after it was reported.
package watcher
