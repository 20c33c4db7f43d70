package transfer

import (
	"sync"

	"github.com/pkg/sftp"
)

// writePieces writes buf at off as one SFTP write request per maxPacket
// bytes, all in flight together, and calls acked with the size of each
// piece as the server acknowledges it. Progress then follows the server's
// acknowledgements: a chunk written as one WriteAt completes only with its
// last request, and as the requests of every chunk in flight interleave,
// all chunks would complete near the end of the file. It returns the first
// error.
func writePieces(f *sftp.File, buf []byte, off int64, acked func(int)) error {
	if len(buf) <= maxPacket {
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
		acked(len(buf))
		return nil
	}
	errs := make([]error, (len(buf)+maxPacket-1)/maxPacket)
	var wg sync.WaitGroup
	for i := range errs {
		p := buf[i*maxPacket : min(len(buf), (i+1)*maxPacket)]
		wg.Go(func() {
			if _, err := f.WriteAt(p, off+int64(i*maxPacket)); err != nil {
				errs[i] = err
				return
			}
			acked(len(p))
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
