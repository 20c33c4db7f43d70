package access

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

func check(u User, reqs []Request) ([]error, error) {
	if u.UID == os.Geteuid() {
		return checkHere(reqs, true), nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("only root can check access as another user (%s)", u.Name)
	}
	type result struct {
		errs []error
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: this thread's identity is changed for good, and
		// the runtime ends the thread with this goroutine.
		runtime.LockOSThread()
		if err := becomeOnThisThread(u); err != nil {
			done <- result{err: err}
			return
		}
		done <- result{errs: checkHere(reqs, false)}
	}()
	r := <-done
	return r.errs, r.err
}

// becomeOnThisThread gives the calling thread u's file-system identity.
// The raw system calls of x/sys/unix act on one thread (the syscall
// package's Setuid and the like act on all).
func becomeOnThisThread(u User) error {
	if err := unix.Setgroups(u.Groups); err != nil {
		return fmt.Errorf("setgroups for %s: %w", u.Name, err)
	}
	if err := unix.Setfsgid(u.GID); err != nil {
		return fmt.Errorf("setfsgid %d: %w", u.GID, err)
	}
	if err := unix.Setfsuid(u.UID); err != nil {
		return fmt.Errorf("setfsuid %d: %w", u.UID, err)
	}
	// setfsuid reports no failure: ask which fsuid is in force (-1 changes
	// nothing).
	if cur, _ := unix.SetfsuidRetUid(-1); cur != u.UID {
		return fmt.Errorf("setfsuid %d did not take (fsuid %d)", u.UID, cur)
	}
	return nil
}

// checkHere checks with this thread's effective (file-system) identity.
// self says that it is the process's own, so that before Linux 5.8 (no
// faccessat2) faccessat, which checks with the real ids, stands in.
func checkHere(reqs []Request, self bool) []error {
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		err := unix.Faccessat2(unix.AT_FDCWD, r.Path, r.Mode, unix.AT_EACCESS)
		if errors.Is(err, unix.ENOSYS) && self && os.Getuid() == os.Geteuid() {
			err = unix.Faccessat(unix.AT_FDCWD, r.Path, r.Mode, 0)
		}
		if err != nil {
			errs[i] = &os.PathError{Op: "access", Path: r.Path, Err: err}
		}
	}
	return errs
}
