package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"runtime"

	"golang.org/x/sys/unix"
)

// hashInBackground computes the sha256 of n files while they are being sent,
// and closes done when all are hashed; sums[i] stays "" for a file that could
// not be read. open returns the i-th file, which is closed after hashing.
//
// Hashing costs about as much CPU as the encryption of the transfer itself
// (0.56 s/GiB here with SHA-NI), so it runs on an OS thread of its own at the
// lowest priority (nice 19): it takes only the CPU the OpenSSH processes
// leave idle and never slows a transfer down; on a busy machine it mostly
// runs once the upload is over. The thread is locked to the goroutine and
// ends with it, so its priority never passes on to other goroutines.
func hashInBackground(n int, open func(i int) (io.ReadCloser, error)) (sums []string, done <-chan struct{}) {
	sums = make([]string, n)
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		runtime.LockOSThread() // never unlocked: the niced thread exits with this goroutine
		_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
		for i := range n {
			f, err := open(i)
			if err != nil {
				continue
			}
			h := sha256.New()
			if _, err := io.Copy(h, f); err == nil {
				sums[i] = hex.EncodeToString(h.Sum(nil))
			}
			f.Close()
		}
	}()
	return sums, ch
}
