package transfer

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
)

// meterThreshold is the size from which a file's upload shows the progress
// meter (and so progress events and the meter-driven stall watchdog).
const meterThreshold = 256 << 10

// maxCommandLine is sftp's limit for one batch line (char cmd[2048] in
// interactive_loop), less the newline.
const maxCommandLine = 2047

// errUnsafeName says a path cannot be written into an sftp batch line.
var errUnsafeName = errors.New("cannot be sent safely")

// sftpQuote escapes a path for an sftp batch command so that sftp passes it
// through byte for byte, whether the command globs it (put's local source, rm)
// or not (put's target, rename, mkdir).
//
// sftp splits its command lines with makeargv(): outside quotes a backslash
// before one of ?[*\ is kept for glob(3) or undo_glob_escape() to remove, and a
// backslash before anything else is simply dropped. So every byte that is not
// plainly safe is preceded by a backslash; bytes above 0x7f are safe (no
// locale makes them spaces in the C locale the clients run in). A newline ends
// the command line and cannot be escaped at all; NUL cannot be in a path.
func sftpQuote(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("empty path: %w", errUnsafeName)
	}
	if strings.ContainsAny(p, "\n\r\x00") {
		return "", fmt.Errorf("%q contains a line break or NUL, which sftp cannot express: %w", p, errUnsafeName)
	}
	var b strings.Builder
	b.Grow(len(p) + 8)
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/._-+,=@%:", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('\\')
		b.WriteByte(c)
	}
	return b.String(), nil
}

// Item is one file to upload.
type Item struct {
	// ID names the item in results and observer calls; it is also part of
	// the temporary remote name, so it must be stable across retries of the
	// same file (a retry then overwrites what a failed attempt left).
	ID string
	// Local is the absolute path of the file to send.
	Local string
	// RemoteDir is the target's folder (remote_dir): absolute, or relative
	// to the login directory. It must exist.
	RemoteDir string
	// Rel is the slash-separated path below RemoteDir; folders in it are
	// created when missing.
	Rel string
	// Size is the file's size, for the deadline and progress.
	Size int64
}

// RemotePath is where the item ends up on the server.
func (it Item) RemotePath() string { return remoteJoin(it.RemoteDir, it.Rel) }

// TempPath is the name the item is written under before the rename: a dot file
// in the same folder, so the rename is atomic and watchers ignore it.
func (it Item) TempPath() string {
	dir := path.Dir(it.RemotePath())
	return remoteJoin(dir, ".dropship-"+shortID(it.ID)+".part")
}

// remoteJoin joins remote path elements; a relative result gets "./" so that
// no path sftp sees starts with "-".
func remoteJoin(elem ...string) string {
	p := path.Join(elem...)
	if !strings.HasPrefix(p, "/") && p != "." {
		p = "./" + p
	}
	return p
}

// shortID keeps temporary names short: a 255-byte file name must still leave
// room for them.
func shortID(id string) string {
	var b strings.Builder
	for _, c := range id {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteRune(c)
		}
		if b.Len() >= 36 {
			break
		}
	}
	if b.Len() == 0 {
		return "x"
	}
	return b.String()
}

// command is one line of a batch and the item it belongs to.
type command struct {
	text string
	item int // index into the plan's items; -1 for the session's own commands
	last bool
}

// plan is a batch: the commands for a list of items, in order.
type plan struct {
	items    []Item
	commands []command
	// rejected holds the items that cannot be expressed, with the reason.
	rejected map[int]error
}

// buildPlan writes the batch for items. Each item is put under its temporary
// name and renamed into place when atomic, or put straight under its final
// name when not; missing folders below RemoteDir are created first (with "-"
// so an existing folder is not an error). When a file is big enough for
// progress to matter, the first command turns on the progress meter, which
// batch mode hides; a batch of small files goes without (their frames would
// be most of the output the agent reads, for files done in milliseconds).
func buildPlan(items []Item, atomic bool) *plan {
	p := &plan{items: items, rejected: map[int]error{}}
	if slices.ContainsFunc(items, func(it Item) bool { return it.Size >= meterThreshold }) {
		p.commands = append(p.commands, command{text: "progress", item: -1})
	}
	made := map[string]bool{}
	for i, it := range items {
		cmds, err := itemCommands(it, atomic, made)
		if err != nil {
			p.rejected[i] = err
			continue
		}
		for j, c := range cmds {
			p.commands = append(p.commands, command{text: c, item: i, last: j == len(cmds)-1})
		}
	}
	return p
}

func itemCommands(it Item, atomic bool, made map[string]bool) ([]string, error) {
	if !path.IsAbs(it.Local) {
		return nil, fmt.Errorf("local path %q is not absolute: %w", it.Local, errUnsafeName)
	}
	if it.Rel == "" || strings.HasPrefix(it.Rel, "/") || path.Clean(it.Rel) != it.Rel || strings.HasPrefix(it.Rel, "../") || it.Rel == ".." {
		return nil, fmt.Errorf("relative path %q is not a clean path below remote_dir: %w", it.Rel, errUnsafeName)
	}
	local, err := sftpQuote(it.Local)
	if err != nil {
		return nil, fmt.Errorf("local path: %w", err)
	}
	final, err := sftpQuote(it.RemotePath())
	if err != nil {
		return nil, fmt.Errorf("remote path: %w", err)
	}
	var cmds []string
	// Folders below RemoteDir, outermost first.
	var dirs []string
	for d := path.Dir(it.Rel); d != "."; d = path.Dir(d) {
		dirs = append(dirs, d)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		full := remoteJoin(it.RemoteDir, dirs[i])
		if made[full] {
			continue
		}
		q, err := sftpQuote(full)
		if err != nil {
			return nil, fmt.Errorf("remote folder: %w", err)
		}
		made[full] = true
		cmds = append(cmds, "-mkdir "+q)
	}
	if atomic {
		tmp, err := sftpQuote(it.TempPath())
		if err != nil {
			return nil, fmt.Errorf("temporary path: %w", err)
		}
		cmds = append(cmds, "put "+local+" "+tmp, "rename "+tmp+" "+final)
	} else {
		cmds = append(cmds, "put "+local+" "+final)
	}
	for _, c := range cmds {
		if len(c) > maxCommandLine {
			return nil, fmt.Errorf("the sftp command for %q would be %d bytes, more than sftp's limit of %d: %w", it.RemotePath(), len(c), maxCommandLine, errUnsafeName)
		}
	}
	return cmds, nil
}

// script is the batch as sftp reads it from stdin.
func (p *plan) script() string {
	var b strings.Builder
	for _, c := range p.commands {
		b.WriteString(c.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// cleanupScript removes the temporary files of the given items, ignoring
// errors (the file may never have been created).
func cleanupScript(items []Item) string {
	var b strings.Builder
	for _, it := range items {
		if q, err := sftpQuote(it.TempPath()); err == nil {
			b.WriteString("-rm " + q + "\n")
		}
	}
	return b.String()
}

// tracker follows a running batch through sftp's echo of each command
// ("sftp> " + the line as written), so output, progress and failures are tied
// to the item whose command is running.
type tracker struct {
	plan *plan
	next int // index of the next command expected to be echoed
}

// echo reports whether line is the echo of the next command; if so it
// advances and returns that command.
func (t *tracker) echo(line string) (command, bool) {
	if t.next >= len(t.plan.commands) || !strings.HasPrefix(line, "sftp> ") {
		return command{}, false
	}
	c := t.plan.commands[t.next]
	if got := line[len("sftp> "):]; got != c.text && got != echoForm(c.text) {
		return command{}, false
	}
	t.next++
	return c, true
}

// echoForm is a command as sftp echoes it in batch mode under LC_ALL=C:
// mprintf() (utf8.c) escapes every byte that is not printable ASCII, a tab,
// a newline or a carriage return as a backslash and three octal digits, so
// "ü" comes back as `\303\274`. Printable ASCII, backslashes included, is
// echoed as it is.
func echoForm(cmd string) string {
	var b strings.Builder
	for i := 0; i < len(cmd); i++ {
		c := cmd[i]
		if c >= 0x20 && c < 0x7f || c == '\t' || c == '\n' || c == '\r' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "\\%03o", c)
	}
	return b.String()
}

// current is the item whose command ran last, or -1 before the first.
func (t *tracker) current() int {
	for i := t.next - 1; i >= 0; i-- {
		if it := t.plan.commands[i].item; it >= 0 {
			return it
		}
	}
	return -1
}

// outcome says, after sftp exited, which items are done. When sftp exits 0
// every command ran. Otherwise the batch stopped at the last echoed command:
// the items wholly before it are done, its item failed, the rest never began.
func (t *tracker) outcome(exitCode int) (done []bool, failed int) {
	done = make([]bool, len(t.plan.items))
	failed = -1
	ran := t.next
	if exitCode == 0 && ran == len(t.plan.commands) {
		for i := range done {
			_, rejected := t.plan.rejected[i]
			done[i] = !rejected
		}
		return done, -1
	}
	// Commands before the last echoed one completed.
	for i := 0; i < ran-1; i++ {
		if c := t.plan.commands[i]; c.last {
			done[c.item] = true
		}
	}
	if ran > 0 {
		failed = t.plan.commands[ran-1].item
	}
	return done, failed
}

// began reports whether item i's commands started.
func (t *tracker) began(i int) bool {
	for j := 0; j < t.next; j++ {
		if t.plan.commands[j].item == i {
			return true
		}
	}
	return false
}
