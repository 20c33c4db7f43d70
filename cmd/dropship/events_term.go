package main

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// terminal is an output that is a terminal able to redraw progress bars.
type terminal interface {
	// size returns the terminal's columns and rows.
	size() (width, height int)
}

// Size of a terminal that does not report one.
const (
	defaultWidth  = 80
	defaultHeight = 24
)

// fdTerminal is a terminal device, asked for its size on every frame so that
// a resized window is followed.
type fdTerminal struct{ fd int }

func (t fdTerminal) size() (int, int) {
	ws, err := unix.IoctlGetWinsize(t.fd, unix.TIOCGWINSZ)
	if err != nil || ws.Col == 0 || ws.Row == 0 {
		return defaultWidth, defaultHeight
	}
	return int(ws.Col), int(ws.Row)
}

// openTerminal returns w as a terminal when it is a terminal device that
// understands cursor movement, and nil otherwise (a file, a pipe, a buffer,
// or TERM=dumb): then nothing but plain lines is written.
func openTerminal(w io.Writer, getenv func(string) string) terminal {
	f, ok := w.(*os.File)
	if !ok || getenv("TERM") == "dumb" {
		return nil
	}
	fd := int(f.Fd())
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return nil
	}
	return fdTerminal{fd: fd}
}
