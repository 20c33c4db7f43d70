package transfer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Resuming an interrupted upload.
//
// While a big file is written under its temporary name, the engine keeps a
// checkpoint in Options.ResumeDir: the longest prefix of the file that the
// server acknowledged, the sha256 of that prefix as read from the local file,
// and the local file's identity (device, inode, size, mtime, ctime). When the
// upload ends without a rename (the connection dropped, a stall, the agent
// stopped or was killed), the temporary file is left on the server, and the
// next upload of the same transfer continues after that prefix, provided
// that:
//
//   - the local file is the same version: same identity, and its prefix
//     read again hashes to the recorded sha256;
//   - the server still holds the temporary file, at least as long as the
//     prefix and no longer than the file, and its last resumeVerify bytes
//     before the resume point are the local file's bytes there.
//
// Anything else starts again from the first byte. A checkpoint is keyed by
// the server and the file's final path, so a new version of the file (a new
// transfer) finds the checkpoint of the version it replaces and removes that
// version's temporary file from the server.
const (
	// resumeMin is the smallest file resumed: smaller ones cost less to
	// send again than to check.
	resumeMin = 8 << 20
	// resumeEvery is how many acknowledged bytes make a new checkpoint.
	resumeEvery = 8 << 20
	// resumeVerify is how much of the remote prefix is read back before
	// resuming.
	resumeVerify = 1 << 20
	// resumeMaxAge is the age after which PruneResume removes a checkpoint.
	resumeMaxAge = 14 * 24 * time.Hour
)

// checkpoint is the state of an interrupted upload, as stored in ResumeDir.
type checkpoint struct {
	Server string `json:"server"` // user@host:port
	Final  string `json:"final"`  // the remote final path
	Temp   string `json:"temp"`   // the remote temporary path written
	ID     string `json:"id"`     // the transfer
	Size   int64  `json:"size"`
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	Mtime  int64  `json:"mtime_ns"`
	Ctime  int64  `json:"ctime_ns"`
	// Offset bytes from the start were acknowledged by the server; their
	// sha256 (as read from the local file) is PrefixSHA256. Offset is a
	// multiple of chunkSize.
	Offset       int64  `json:"offset"`
	PrefixSHA256 string `json:"prefix_sha256"`
	// Acked are the byte ranges [start, end) past Offset that the server
	// acknowledged too: the sessions of a striped upload, and the requests
	// of one session, are answered out of order.
	Acked [][2]int64 `json:"acked,omitempty"`
}

func (ck *checkpoint) sameVersion(st fileState) bool {
	return ck.Size == st.size && ck.Dev == st.dev && ck.Ino == st.ino &&
		ck.Mtime == st.mtime.Nano() && ck.Ctime == st.ctime.Nano()
}

// resumeServer names the server in checkpoints.
func (c *Client) resumeServer() string {
	return fmt.Sprintf("%s@%s:%d", c.t.User, c.t.Host, c.t.Port)
}

// checkpointPath is where the checkpoint of the upload to final is kept, or
// "" when the client keeps none.
func (c *Client) checkpointPath(final string) string {
	if c.opts.ResumeDir == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(c.resumeServer() + "\x00" + final))
	return filepath.Join(c.opts.ResumeDir, hex.EncodeToString(sum[:16])+".json")
}

func (c *Client) loadCheckpoint(final string) *checkpoint {
	p := c.checkpointPath(final)
	if p == "" {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.logger.Warn("cannot read an upload's checkpoint; the upload starts from the beginning", "path", p, "err", err)
		}
		return nil
	}
	var ck checkpoint
	if err := json.Unmarshal(b, &ck); err != nil || ck.Server != c.resumeServer() || ck.Final != final {
		c.dropCheckpoint(final)
		return nil
	}
	return &ck
}

func (c *Client) saveCheckpoint(ck *checkpoint) {
	p := c.checkpointPath(ck.Final)
	if p == "" {
		return
	}
	b, err := json.Marshal(ck)
	if err == nil {
		tmp := p + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, p)
		}
	}
	if err != nil {
		c.resumeWarn.Do(func() {
			c.logger.Warn("cannot write upload checkpoints; interrupted uploads start again from the beginning", "dir", c.opts.ResumeDir, "err", err)
		})
	}
}

func (c *Client) dropCheckpoint(final string) {
	if p := c.checkpointPath(final); p != "" {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.logger.Debug("cannot remove an upload's checkpoint", "path", p, "err", err)
		}
	}
}

// PruneResume removes the checkpoints in dir older than two weeks: their
// uploads were abandoned (the temporary files they describe may still be on
// their servers).
func PruneResume(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") && !strings.HasSuffix(e.Name(), ".json.tmp") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > resumeMaxAge {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// resumePoint decides where item i's upload to dst starts: after the prefix
// an earlier, interrupted upload of the same version left on the server, or
// at 0. It returns that offset, the sha256 state of the local bytes before
// it, and the ranges past it the server holds already (nil unless resumed).
// A checkpoint of another transfer of the same final name (an older version)
// has its temporary file removed.
func (u *uploadRun) resumePoint(i int, st fileState, dst string) (int64, hash.Hash, [][2]int64) {
	it := u.items[i]
	h := sha256.New()
	if !u.c.opts.Atomic || it.Size < resumeMin {
		return 0, h, nil
	}
	final := it.RemotePath()
	ck := u.c.loadCheckpoint(final)
	if ck == nil {
		return 0, h, nil
	}
	s := u.s
	restart := func(why string) (int64, hash.Hash, [][2]int64) {
		u.c.logger.Info("not resuming an interrupted upload; sending the file from the beginning", "file", it.Local, "remote", final, "reason", why)
		if ck.Temp != dst {
			// The older transfer's leftover: dropship's own file.
			if err := s.do(func() error { return s.client.Remove(ck.Temp) }); err != nil && !errors.Is(err, os.ErrNotExist) {
				u.c.logger.Debug("cannot remove an older upload's temporary file", "path", ck.Temp, "err", err)
			}
		}
		u.c.dropCheckpoint(final)
		return 0, sha256.New(), nil
	}
	end := ck.Offset
	for _, r := range ck.Acked {
		if r[0] < ck.Offset || r[1] <= r[0] || r[1] > it.Size {
			return restart("the checkpoint is not usable")
		}
		end = max(end, r[1])
	}
	switch {
	case ck.ID != it.ID || ck.Temp != dst:
		return restart("another transfer (an older version of the file) was interrupted")
	case !ck.sameVersion(st):
		return restart("the local file changed since the interrupted upload")
	case ck.Offset <= 0 || ck.Offset > it.Size || ck.Offset%chunkSize != 0:
		return restart("the checkpoint is not usable")
	}
	var fi os.FileInfo
	err := s.do(func() (err error) { fi, err = s.client.Lstat(dst); return })
	switch {
	case err != nil:
		return restart("the server no longer holds the interrupted upload's temporary file")
	case !fi.Mode().IsRegular() || fi.Size() < end || fi.Size() > it.Size:
		return restart(fmt.Sprintf("the temporary file on the server is not what was written (%d bytes, %d acknowledged)", fi.Size(), end))
	}
	if _, err := io.Copy(h, io.NewSectionReader(it.File, 0, ck.Offset)); err != nil {
		return restart(fmt.Sprintf("reading the local file: %v", err))
	}
	if hex.EncodeToString(h.Sum(nil)) != ck.PrefixSHA256 {
		return restart("the local file's first bytes differ from those sent")
	}
	n := min(int64(resumeVerify), ck.Offset)
	local := make([]byte, n)
	if _, err := it.File.ReadAt(local, ck.Offset-n); err != nil {
		return restart(fmt.Sprintf("reading the local file: %v", err))
	}
	remote := make([]byte, n)
	err = s.do(func() error {
		f, err := s.client.Open(dst)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.ReadAt(remote, ck.Offset-n)
		return err
	})
	if err != nil {
		if isConnErr(err) {
			return 0, sha256.New(), nil // the session is gone; the upload fails on its own
		}
		return restart(fmt.Sprintf("reading the temporary file back: %v", err))
	}
	if !bytes.Equal(local, remote) {
		return restart("the temporary file on the server does not hold the bytes sent")
	}
	held := ck.Offset
	for _, r := range ck.Acked {
		held += r[1] - r[0]
	}
	u.c.logger.Info("resuming an interrupted upload", "file", it.Local, "remote", final, "from", ck.Offset, "held", held, "size", it.Size)
	return ck.Offset, h, ck.Acked
}

// checkpointer records what the server acknowledged of one upload (see
// above).
type checkpointer struct {
	c      *Client
	ck     checkpoint
	mu     sync.Mutex
	next   int64            // every byte below next is acknowledged
	acked  map[int64]int64  // acknowledged ranges above next: start → end
	marks  map[int64]string // sha256 of the prefix up to each checkpoint offset
	unsent int64            // bytes acknowledged since the last save
	saved  bool
}

// newCheckpointer starts the checkpoints of item it, written to dst from
// offset from, the server holding held already; nil when the upload is not
// resumable.
func (u *uploadRun) newCheckpointer(it Item, st fileState, dst string, from int64, held [][2]int64) *checkpointer {
	if !u.c.opts.Atomic || it.Size < resumeMin || u.c.opts.ResumeDir == "" {
		return nil
	}
	cp := &checkpointer{
		c: u.c,
		ck: checkpoint{
			Server: u.c.resumeServer(), Final: it.RemotePath(), Temp: dst, ID: it.ID,
			Size: st.size, Dev: st.dev, Ino: st.ino, Mtime: st.mtime.Nano(), Ctime: st.ctime.Nano(),
			Offset: from,
		},
		next:  from,
		acked: map[int64]int64{},
		marks: map[int64]string{},
		saved: from > 0,
	}
	for _, r := range held {
		cp.acked[r[0]] = r[1]
	}
	cp.advance()
	return cp
}

// held says whether the server holds [off, off+n) already (a resumed
// upload), so that it is not sent again.
func held(ranges [][2]int64, off, n int64) bool {
	for _, r := range ranges {
		if r[0] <= off && off+n <= r[1] {
			return true
		}
	}
	return false
}

// read tells that the bytes before off were read (and hashed into h): the
// prefix hash at each chunk boundary is kept until the acknowledged prefix
// passes it (the marks are bounded by the bytes in flight).
func (cp *checkpointer) read(off int64, h hash.Hash) {
	if cp == nil || off%chunkSize != 0 {
		return
	}
	sum := hex.EncodeToString(h.Sum(nil))
	cp.mu.Lock()
	if off > cp.ck.Offset {
		cp.marks[off] = sum
	}
	cp.mu.Unlock()
}

// advance moves next over the ranges that continue it. Called with cp.mu.
func (cp *checkpointer) advance() {
	for {
		end, ok := cp.acked[cp.next]
		if !ok {
			return
		}
		delete(cp.acked, cp.next)
		cp.next = end
	}
}

// ack tells that the server acknowledged n bytes at off. A checkpoint is
// saved after every resumeEvery bytes acknowledged.
func (cp *checkpointer) ack(off, n int64) {
	if cp == nil {
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.acked[off] = off + n
	cp.advance()
	cp.unsent += n
	best := cp.ck.Offset
	for off := range cp.marks {
		if off <= cp.next {
			best = max(best, off)
		}
	}
	if cp.unsent < resumeEvery || best == 0 {
		return // a file write per resumeEvery bytes; none before a prefix is verifiable
	}
	if best > cp.ck.Offset {
		cp.ck.Offset, cp.ck.PrefixSHA256 = best, cp.marks[best]
		for off := range cp.marks {
			if off <= best {
				delete(cp.marks, off)
			}
		}
	}
	cp.ck.Acked = cp.ck.Acked[:0]
	if cp.next > cp.ck.Offset {
		cp.ck.Acked = append(cp.ck.Acked, [2]int64{cp.ck.Offset, cp.next})
	}
	starts := make([]int64, 0, len(cp.acked))
	for s := range cp.acked {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	for _, s := range starts {
		e := cp.acked[s]
		if k := len(cp.ck.Acked); k > 0 && cp.ck.Acked[k-1][1] == s {
			cp.ck.Acked[k-1][1] = e
			continue
		}
		cp.ck.Acked = append(cp.ck.Acked, [2]int64{s, e})
	}
	cp.unsent = 0
	cp.c.saveCheckpoint(&cp.ck)
	cp.saved = true
}

// resumable says whether an upload that failed with err leaves its
// temporary file for the next attempt: it has a checkpoint, and the failure
// was the connection's or the agent's, not the file's.
func (cp *checkpointer) resumable(err error) bool {
	if cp == nil {
		return false
	}
	cp.mu.Lock()
	saved := cp.saved
	cp.mu.Unlock()
	if !saved {
		return false
	}
	switch ClassOf(err) {
	case ClassLostConnection, ClassStalled, ClassCanceled, ClassUnknown:
		return true
	}
	return false
}
