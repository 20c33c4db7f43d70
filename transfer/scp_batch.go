package transfer

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Small files over scp go in batches: the files of one folder through one
// `scp -t` session into that folder, each under its temporary name, then one
// shell session that renames those that arrived whole and unchanged. A file
// then costs about two round trips of its session instead of a session of its
// own (a channel, a shell, a remote scp). Only where the account has a POSIX
// shell and delivery is atomic: the temporary names are dropship's own, so
// they travel in the protocol's lines, where a name may not hold a newline.
const (
	// scpBatchMax is the size below which a file may go in a batch.
	scpBatchMax = 1 << 20
	// scpBatchFiles bounds the files of one batch, and so one rename
	// command line (far below the 128 KiB a Linux argument may hold).
	scpBatchFiles = 32
)

// testBatchHook, when set by a test, is called before and after a batched
// file's bytes are sent.
var testBatchHook func(it Item, when string)

// scpUnits groups the items of todo into the units the workers take: a batch
// of small files of one folder, or a single file.
func (u *scpRun) scpUnits(todo []int) [][]int {
	if u.p.shell != shellPOSIX || !u.c.opts.Atomic {
		units := make([][]int, len(todo))
		for k, i := range todo {
			units[k] = []int{i}
		}
		return units
	}
	var units [][]int
	open := map[string]int{} // folder → index in units of its open batch
	for _, i := range todo {
		it := u.items[i]
		if it.Size >= scpBatchMax {
			units = append(units, []int{i})
			continue
		}
		dir := path.Dir(it.RemotePath())
		k, ok := open[dir]
		if !ok || len(units[k]) == scpBatchFiles {
			k = len(units)
			units = append(units, nil)
			open[dir] = k
		}
		units[k] = append(units[k], i)
	}
	return units
}

// batch sends the files idx (small, in one folder) and records their
// results.
func (u *scpRun) batch(idx []int) {
	if len(idx) == 1 {
		u.one(idx[0])
		return
	}
	if e := u.stopped.Load(); e != nil {
		for _, i := range idx {
			u.res[i].Err = e
		}
		return
	}
	left := idx
	for try := 0; len(left) > 0 && try <= scpRefusedRetries && u.ctx.Err() == nil; try++ {
		release := u.c.scpSession(u.ctx)
		if release == nil {
			break
		}
		var refused bool
		left, refused = u.sendBatch(left)
		if !refused || !u.c.scpShrink() {
			release()
		}
		if refused {
			time.Sleep(refusedWait(try))
		}
	}
	for _, i := range left {
		if u.res[i].Err == nil {
			u.res[i].Err = &Error{Class: ClassCanceled, Message: "not sent: stopped, or no session could be had", ExitCode: -1}
			if u.ctx.Err() == nil {
				u.res[i].Err = &Error{Class: ClassLostConnection, Message: "the server refused every session (lower connections)", ExitCode: -1}
			}
		}
	}
}

// batchFile is one file of a batch on its way.
type batchFile struct {
	i      int
	before fileState
	sum    string
	sent   bool // under its temporary name, whole and unchanged
}

// sendBatch sends the files idx through one session and renames those that
// arrived. It returns the files still to be tried (those not begun when the
// server refused the session).
func (u *scpRun) sendBatch(idx []int) (left []int, refused bool) {
	c := u.c
	first := u.items[idx[0]]
	dir := path.Dir(first.Rel)
	var files []*batchFile
	for _, i := range idx {
		it := u.items[i]
		before, err := statFile(it.File)
		switch {
		case err != nil:
			u.res[i].Err = &Error{Class: ClassLocalFile, Message: fmt.Sprintf("stat %s: %v", it.Local, err), ExitCode: -1}
		case !before.regular || before.size != it.Size:
			u.res[i].Err = localChanged(it, "it is no longer the file that was checked (size or type changed)")
		default:
			files = append(files, &batchFile{i: i, before: before})
		}
	}
	if len(files) == 0 {
		return nil, false
	}
	var b strings.Builder
	if rd := path.Clean(first.RemoteDir); rd != "." {
		fmt.Fprintf(&b, "cd -- %s || exit %d; ", shQuote(shPath(rd)), exitCD)
	}
	if dir != "." {
		fmt.Fprintf(&b, "mkdir -p -- %s || exit %d; ", shQuote("./"+dir), exitMkdir)
	}
	scp := "scp -t"
	if c.opts.Preserve {
		scp += " -p"
	}
	fmt.Fprintf(&b, "%s -- %s || exit %d", scp, shQuote("./"+dir), exitSCP)
	var current atomic.Int64 // the file whose lines ssh prints
	current.Store(int64(files[0].i))
	proc, err := c.scpExec(u.ctx, u.m, b.String(), func(line string) { u.line(u.items[current.Load()].ID, line) })
	if err != nil {
		for _, f := range files {
			u.res[f.i].Err = asError(err)
		}
		return nil, false
	}
	defer proc.stop()
	var total int64
	for _, f := range files {
		total += u.items[f.i].Size
	}
	stopWatch := proc.watch(u.ctx, c.t.StallTimeout, time.Now().Add(deadlineBase+time.Duration(total/deadlineRate)*time.Second))
	defer stopWatch()

	fail := func(from int, e *Error) {
		for _, f := range files[from:] {
			if u.res[f.i].Err == nil && !f.sent {
				u.res[f.i].Err = e
			}
		}
		if e.Class.TargetWide() {
			u.stopped.CompareAndSwap(nil, e)
		}
	}
	if e := proc.expectOK(&first); e != nil {
		if sessionRefused(e) {
			return idx, true
		}
		fail(0, e)
		return nil, false
	}
send:
	for k, f := range files {
		it := u.items[f.i]
		r := &u.res[f.i]
		current.Store(int64(f.i))
		r.Start = time.Now()
		var header []byte
		acks := 1
		var mode os.FileMode = 0o644
		if c.opts.Preserve {
			if fi, err := it.File.Stat(); err == nil {
				mode = fi.Mode().Perm()
				t := fi.ModTime().Unix()
				header = fmt.Appendf(header, "T%d 0 %d 0\n", t, t)
				acks++
			}
		}
		header = fmt.Appendf(header, "C%04o %d %s\n", mode, it.Size, path.Base(it.TempPath()))
		if e := proc.sendOr(&it, header); e != nil {
			fail(k, e)
			break
		}
		u.begin(f.i, r)
		var refusal string
		for range acks {
			msg, err := proc.ack()
			if err != nil {
				fail(k, proc.stepErr(&it, 0, err))
				break send
			}
			if msg != "" && refusal == "" {
				refusal = msg
			}
		}
		if refusal != "" {
			// The remote scp goes on with the next file.
			e := scpRefusal(refusal, it.RemotePath(), "")
			r.Err, r.End = e, time.Now()
			if e.Class.TargetWide() {
				fail(k+1, e)
				break
			}
			continue
		}
		if testBatchHook != nil {
			testBatchHook(it, "before")
		}
		sum, werr := u.write(it, proc)
		if testBatchHook != nil {
			testBatchHook(it, "after")
		}
		if werr != nil {
			if te := asError(werr); te.Class == ClassLocalChanged || te.Class == ClassLocalFile {
				// Short: the remote scp still waits for its
				// bytes, so nothing can follow them. The files
				// after it go in another session.
				r.Err, r.End = te, time.Now()
				_ = proc.send([]byte("\x02dropship: the upload was abandoned\n"))
				for _, g := range files[k+1:] {
					left = append(left, g.i)
				}
				files = files[:k+1]
			} else {
				fail(k, proc.stepErr(&it, 0, nil))
			}
			break
		}
		// Unchanged since it was checked, or it is not delivered.
		after, err := statFile(it.File)
		switch {
		case err != nil:
			werr = &Error{Class: ClassLocalFile, Message: fmt.Sprintf("stat %s: %v", it.Local, err), ExitCode: -1}
		case after != f.before:
			werr = localChanged(it, "it changed while it was being sent (size, mtime or ctime)")
		}
		status := []byte{0}
		if werr != nil {
			// An error answer of ours: the remote scp keeps the
			// bytes (removed with the renames) and goes on.
			status = []byte("\x01dropship: the local file changed\n")
		}
		if e := proc.sendOr(&it, status); e != nil {
			fail(k, e)
			break
		}
		msg, err := proc.ack()
		switch {
		case err != nil:
			fail(k, proc.stepErr(&it, 0, err))
			break send
		case werr != nil:
			r.Err = werr
		case msg != "":
			r.Err = scpRefusal(msg, it.RemotePath(), "")
		default:
			f.sent, f.sum = true, sum
		}
		r.End = time.Now()
	}
	proc.closeStdin()
	_, _ = io.Copy(io.Discard, proc.out)
	proc.wait()
	u.renameBatch(files)
	return left, false
}

// renameBatch renames the files of a batch that arrived, in one shell
// session, and removes the temporary files of the others.
func (u *scpRun) renameBatch(files []*batchFile) {
	c := u.c
	first := u.items[files[0].i]
	var b strings.Builder
	if rd := path.Clean(first.RemoteDir); rd != "." {
		fmt.Fprintf(&b, "cd -- %s || exit %d\n", shQuote(shPath(rd)), exitCD)
	}
	var todo []*batchFile
	for k, f := range files {
		it := u.items[f.i]
		t := shQuote("./" + path.Join(path.Dir(it.Rel), path.Base(it.TempPath())))
		fin := shQuote("./" + it.Rel)
		if !f.sent {
			fmt.Fprintf(&b, "rm -f -- %s\n", t)
			continue
		}
		todo = append(todo, f)
		n := strconv.Itoa(k)
		switch {
		case c.opts.Overwrite:
			fmt.Fprintf(&b, "if test -d %s; then rm -f -- %s; echo '%s %d'; elif mv -f -- %s %s; then echo '%s 0'; else rm -f -- %s; echo '%s %d'; fi\n",
				fin, t, n, exitIsDir, t, fin, n, t, n, exitRename)
		default:
			fmt.Fprintf(&b, "if test -e %s || test -L %s; then rm -f -- %s; echo '%s %d'; elif ln -- %s %s; then rm -f -- %s; echo '%s 0'; "+
				"else rm -f -- %s; if test -e %s || test -L %s; then echo '%s %d'; else echo '%s %d'; fi; fi\n",
				fin, fin, t, n, exitExists, t, fin, t, n, t, fin, fin, n, exitExists, n, exitLink)
		}
	}
	// The batch's own session may not be gone yet on a server that allows
	// few sessions (MaxSessions): a refused rename session is tried again,
	// as a refused batch is.
	var proc *scpProc
	var codes map[int]int
	for try := 0; ; try++ {
		var err error
		proc, err = c.scpExec(u.ctx, u.m, b.String(), nil)
		if err != nil {
			for _, f := range todo {
				u.res[f.i].Err = asError(err)
			}
			return
		}
		stopWatch := proc.watch(u.ctx, c.t.StallTimeout, time.Now().Add(deadlineBase))
		proc.closeStdin()
		codes = map[int]int{}
		sc := bufio.NewScanner(proc.out)
		for sc.Scan() {
			var k, code int
			if _, err := fmt.Sscanf(sc.Text(), "%d %d", &k, &code); err == nil {
				codes[k] = code
			}
		}
		proc.wait()
		stopWatch()
		if len(codes) > 0 || try >= scpRefusedRetries || u.ctx.Err() != nil || !sessionRefused(proc.stepErr(&first, 0, nil)) {
			break
		}
		proc.stop()
		time.Sleep(refusedWait(try))
	}
	defer proc.stop()
	said := lastLines(proc.recent(), 2)
	for k, f := range files {
		if !f.sent {
			continue
		}
		it := u.items[f.i]
		r := &u.res[f.i]
		code, ok := codes[k]
		switch {
		case ok && code == 0:
			r.SHA256, r.ExitCode = f.sum, 0
		case ok:
			if e := stepClass(code, &it, said); e != nil {
				r.Err = e
			} else {
				r.Err = &Error{Class: ClassUnknown, Message: fmt.Sprintf("the rename of %q failed on the server (status %d)", it.RemotePath(), code), ExitCode: code}
			}
		default:
			r.Err = proc.stepErr(&it, 0, nil)
		}
		r.End = time.Now()
	}
}
