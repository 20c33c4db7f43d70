package watcher

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ---- sandboxes: scripts that need another user or a user namespace ----

// runSandboxed re-executes the test binary to run one script:
//
//	sandbox nobody          as an unprivileged user (uid 65534 when we are root)
//	sandbox watch-limit N   in a new user namespace whose inotify watch limit
//	                        (/proc/sys/user/max_inotify_watches) is N; the
//	                        limit is private to that namespace
func runSandboxed(t *testing.T, name string, sandbox []string) {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	attr := &syscall.SysProcAttr{}
	dir, err := os.MkdirTemp("", "watcher-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	switch sandbox[0] {
	case "nobody":
		if os.Geteuid() != 0 {
			break // already unprivileged: the child runs as we do
		}
		// The test binary's folder is private to root: copy it where
		// nobody can run it.
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		bin = copyExecutable(t, bin, filepath.Join(dir, "watcher.test"))
		attr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	case "watch-limit":
		attr.Cloneflags = syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	default:
		t.Fatalf("unknown sandbox %q", sandbox[0])
	}
	// The child runs in dir, which must hold its script.
	if err := os.Mkdir(filepath.Join(dir, "testdata"), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join("testdata", name+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "testdata", name+".txt"), script, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestScripts$/^"+name+"$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), scriptChildEnv+"="+name, "TMPDIR=/tmp")
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	if err != nil {
		if sandbox[0] == "watch-limit" && strings.Contains(err.Error(), "operation not permitted") {
			t.Skipf("user namespaces are not available here: %v", err)
		}
		t.Fatalf("sandboxed script failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestScripts/"+name) {
		t.Fatalf("sandboxed script did not pass:\n%s", out)
	}
	t.Logf("sandboxed run:\n%s", out)
}

func copyExecutable(t *testing.T, src, dst string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}
