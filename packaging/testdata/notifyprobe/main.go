// Command notifyprobe plays systemd's side of the sd_notify protocol for
// one run of a Type=notify service, where no systemd is running (CI,
// containers). It is a packaging test tool, not part of dropship; it lives
// under testdata so that `go build ./...` and `go test ./...` skip it.
//
//	notifyprobe [-timeout 60s] -- COMMAND [ARG...]
//
// It listens on a datagram socket, starts COMMAND with NOTIFY_SOCKET set,
// and then walks the life of the service as systemd would see it: READY=1;
// SIGHUP, answered by RELOADING=1 then READY=1; a WATCHDOG=1; SIGTERM,
// answered by STOPPING=1; and exit status 0. Every message must come from
// the main process (the unit's NotifyAccess=main ignores any other).
// It prints each message and exits 0 when all of that happened in order.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	timeout := flag.Duration("timeout", 60*time.Second, "give up after this long")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: notifyprobe [-timeout D] -- COMMAND [ARG...]")
		os.Exit(2)
	}
	if err := probe(flag.Args(), *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "notifyprobe: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("notifyprobe: ok: READY, RELOADING/READY on SIGHUP, WATCHDOG, STOPPING on SIGTERM, exit 0, all from the main process")
}

type message struct {
	pid   int32
	state string
}

func probe(argv []string, timeout time.Duration) error {
	dir, err := os.MkdirTemp("", "notifyprobe")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	defer conn.Close()
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		return fmt.Errorf("SO_PASSCRED: %v %v", err, serr)
	}

	msgs := make(chan message, 64)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
		for {
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			var pid int32 = -1
			if cmsgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil && len(cmsgs) > 0 {
				if cred, err := syscall.ParseUnixCredentials(&cmsgs[0]); err == nil {
					pid = cred.Pid
				}
			}
			for _, line := range strings.Split(strings.TrimSpace(string(buf[:n])), "\n") {
				msgs <- message{pid: pid, state: line}
			}
		}
	}()

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()
	mainPID := int32(cmd.Process.Pid)
	deadline := time.After(timeout)

	// expect waits for state, failing on a message from another process.
	expect := func(state string) error {
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					return errors.New("notify socket closed")
				}
				fmt.Printf("notifyprobe: pid %d sent %q\n", m.pid, m.state)
				if m.pid != mainPID {
					return fmt.Errorf("%q came from pid %d, not the main process %d: NotifyAccess=main would ignore it", m.state, m.pid, mainPID)
				}
				if m.state == state {
					return nil
				}
			case err := <-exited:
				return fmt.Errorf("the service exited (%v) while waiting for %s", err, state)
			case <-deadline:
				return fmt.Errorf("no %s within %s", state, timeout)
			}
		}
	}
	signal := func(sig syscall.Signal) error {
		fmt.Printf("notifyprobe: sending %s\n", sig)
		return cmd.Process.Signal(sig)
	}

	for _, step := range []func() error{
		func() error { return expect("READY=1") },
		func() error { return signal(syscall.SIGHUP) },
		func() error { return expect("RELOADING=1") },
		func() error { return expect("READY=1") },
		func() error { return expect("WATCHDOG=1") },
		func() error { return signal(syscall.SIGTERM) },
		func() error { return expect("STOPPING=1") },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("the service did not exit cleanly after SIGTERM: %w", err)
		}
		return nil
	case <-deadline:
		return fmt.Errorf("the service did not exit within %s of start", timeout)
	}
}
