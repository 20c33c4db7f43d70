// Package access tells whether a user may read or write a path as the kernel
// decides it for that user (permission bits, ACLs, read-only mounts), so that
// `dropship check`, run by root, can judge a watch folder as the service's
// user sees it.
//
// Checking as another user needs root: the check runs on an OS thread of its
// own whose file-system identity (setfsuid, setfsgid, setgroups) is that of
// the user, which drops root's CAP_DAC_OVERRIDE for that thread; the thread
// is never given back to the Go runtime, and ends with the check.
package access
