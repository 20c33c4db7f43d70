package sftpd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// client connects github.com/pkg/sftp's client to the fixture's server over
// golang.org/x/crypto/ssh.
func (fx *fixture) client(t *testing.T) *sftp.Client {
	t.Helper()
	c, err := dial(t, fx, ssh.Password(testPassword))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// put uploads data to the remote path p with cl.
func put(t *testing.T, cl *sftp.Client, p string, data string) {
	t.Helper()
	f, err := cl.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// wantStatus fails unless err is an SFTP status with the code want (an
// sftp.ErrSSHFx* constant) and, if msg is not empty, that message.
func wantStatus(t *testing.T, what string, err, want error, msg string) {
	t.Helper()
	var se *sftp.StatusError
	if !errors.As(err, &se) || error(se.FxCode()) != want {
		t.Fatalf("%s: %v (%T), want status %v", what, err, err, want)
	}
	if msg != "" && !strings.Contains(se.Error(), fmt.Sprintf("%q", msg)) {
		t.Fatalf("%s: %v, want message %q", what, err, msg)
	}
}

// wantExtensions fails unless cl was offered exactly the extensions want.
func wantExtensions(t *testing.T, cl *sftp.Client, want ...string) {
	t.Helper()
	for _, ext := range []string{extPosixRename, extStatVFS, extHardlink, extFSync} {
		data, ok := cl.HasExtension(ext)
		if ok != slices.Contains(want, ext) {
			t.Errorf("HasExtension(%q) = %q, %v; want offered %v", ext, data, ok, !ok)
		}
	}
}

// kinds are the kinds of ops, for comparing orders of operations.
func kinds(ops []Op) string {
	var ks []string
	for _, op := range ops {
		k := op.Kind
		if op.Err != nil {
			k += "!"
		}
		ks = append(ks, k)
	}
	return strings.Join(ks, " ")
}

func TestDefaultExtensions(t *testing.T) {
	fx := start(t, Config{})
	cl := fx.client(t)
	wantExtensions(t, cl, extPosixRename, extStatVFS, extHardlink, extFSync)
	for ext, want := range map[string]string{extPosixRename: "1", extStatVFS: "2", extHardlink: "1", extFSync: "1"} {
		if data, _ := cl.HasExtension(ext); data != want {
			t.Errorf("%s offered as %q, want %q (OpenSSH's versions)", ext, data, want)
		}
	}

	a, b := filepath.Join(fx.home, "a"), filepath.Join(fx.home, "b")
	put(t, cl, a, "new")
	put(t, cl, b, "old")
	// SFTPv3 rename keeps an existing target; posix-rename replaces it.
	wantStatus(t, "Rename onto an existing file", cl.Rename(a, b), sftp.ErrSSHFxFailure, "file exists")
	wantFile(t, b, []byte("old"))
	if err := cl.PosixRename(a, b); err != nil {
		t.Fatalf("PosixRename: %v", err)
	}
	wantFile(t, b, []byte("new"))
	if err := cl.Link(b, a); err != nil {
		t.Fatalf("Link (hardlink@openssh.com): %v", err)
	}
	if st := fx.srv.Stats(); st.Renames != 1 || st.PosixRenames != 1 {
		t.Fatalf("stats %+v, want 1 rename and 1 posix-rename", st)
	}
	if got, want := kinds(fx.srv.OpsOn(b)), "open close rename! posix-rename link"; got != want {
		t.Fatalf("ops on b: %s, want %s", got, want)
	}
}

func TestQuirkNoPosixRename(t *testing.T) {
	fx := start(t, Config{Quirks: Quirks{NoPosixRename: true}})
	cl := fx.client(t)
	wantExtensions(t, cl, extStatVFS, extHardlink, extFSync)

	part, final := filepath.Join(fx.home, "f.part"), filepath.Join(fx.home, "f")
	put(t, cl, final, "old")
	put(t, cl, part, "new")
	wantStatus(t, "PosixRename", cl.PosixRename(part, final), sftp.ErrSSHFxOpUnsupported, "")
	wantStatus(t, "Rename onto an existing file", cl.Rename(part, final), sftp.ErrSSHFxFailure, "file exists")
	wantFile(t, final, []byte("old"))
	// The fallback: remove the target, then plain rename.
	if err := cl.Remove(final); err != nil {
		t.Fatal(err)
	}
	if err := cl.Rename(part, final); err != nil {
		t.Fatalf("Rename after Remove: %v", err)
	}
	wantFile(t, final, []byte("new"))
	if got, want := kinds(fx.srv.OpsOn(final)), "open close posix-rename! rename! remove rename"; got != want {
		t.Fatalf("ops on f: %s, want %s", got, want)
	}
	ops := fx.srv.OpsOn(final)
	if !errors.Is(ops[2].Err, sftp.ErrSSHFxOpUnsupported) || !errors.Is(ops[3].Err, sftp.ErrSSHFxFailure) {
		t.Fatalf("ops %+v: want posix-rename unsupported and rename failed", ops)
	}
	if st := fx.srv.Stats(); st.PosixRenames != 1 || st.Renames != 2 {
		t.Fatalf("stats %+v, want 1 posix-rename and 2 renames", st)
	}

	// OpenSSH's sftp falls back to SSH_FXP_RENAME by itself.
	src, data := localFile(t, "src", 100)
	out, code := fx.sftp(t, nil, "put "+src+" "+part, "rename "+part+" "+final)
	wantOutput(t, out, code, 1, fmt.Sprintf("remote rename %q to %q: Failure", part, final))
	out, code = fx.sftp(t, nil, "rm "+final, "rename "+part+" "+final)
	wantOutput(t, out, code, 0)
	wantFile(t, final, data)
	if st := fx.srv.Stats(); st.PosixRenames != 1 || st.Renames != 4 {
		t.Fatalf("stats %+v, want still 1 posix-rename and now 4 renames", st)
	}
}

func TestQuirkRenameReplaces(t *testing.T) {
	fx := start(t, Config{Quirks: Quirks{RenameReplaces: true}})
	cl := fx.client(t)
	a, b := filepath.Join(fx.home, "a"), filepath.Join(fx.home, "b")
	put(t, cl, a, "new")
	put(t, cl, b, "old")
	if err := cl.Rename(a, b); err != nil {
		t.Fatalf("Rename onto an existing file: %v", err)
	}
	wantFile(t, b, []byte("new"))

	// RejectRename still wins.
	fx.srv.SetFaults(Faults{RejectRename: true})
	put(t, cl, a, "newer")
	if err := cl.Rename(a, b); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("Rename with RejectRename: %v, want permission denied", err)
	}
}

func TestQuirkSetstat(t *testing.T) {
	for _, tc := range []struct {
		name    string
		quirks  Quirks
		want    error  // what the server answers
		openssh string // what OpenSSH's sftp prints
	}{
		{"DenySetstat", Quirks{DenySetstat: true}, sftp.ErrSSHFxPermissionDenied, "Permission denied"},
		{"SetstatUnsupported", Quirks{SetstatUnsupported: true}, sftp.ErrSSHFxOpUnsupported, "Operation unsupported"},
		{"both", Quirks{DenySetstat: true, SetstatUnsupported: true}, sftp.ErrSSHFxPermissionDenied, "Permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := start(t, Config{Quirks: tc.quirks})
			cl := fx.client(t)
			p := filepath.Join(fx.home, "f")
			put(t, cl, p, "data") // attributes in the open request still work

			check := func(what string, err error) {
				t.Helper()
				if tc.want == sftp.ErrSSHFxPermissionDenied {
					// pkg/sftp's client turns the code into os.ErrPermission.
					if !errors.Is(err, os.ErrPermission) {
						t.Fatalf("%s: %v, want os.ErrPermission", what, err)
					}
					return
				}
				wantStatus(t, what, err, tc.want, "")
			}
			// SETSTAT
			check("Chmod", cl.Chmod(p, 0o600))
			check("Chtimes", cl.Chtimes(p, time.Now(), time.Now()))
			check("Truncate", cl.Truncate(p, 1))
			// FSETSTAT
			f, err := cl.OpenFile(p, os.O_WRONLY)
			if err != nil {
				t.Fatal(err)
			}
			check("File.Chmod", f.Chmod(0o600))
			check("File.Truncate", f.Truncate(1))
			// fsync@openssh.com travels as an FSETSTAT inside the server
			// but is not refused with it.
			if err := f.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			f.Close()
			wantFile(t, p, []byte("data"))
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() == 0o600 {
				t.Fatalf("mode changed: %v, %v", fi, err)
			}
			if st := fx.srv.Stats(); st.Setstats != 5 || st.FSyncs != 1 {
				t.Fatalf("stats %+v, want 5 setstats and 1 fsync", st)
			}

			out, code := fx.sftp(t, nil, "chmod 600 "+p)
			wantOutput(t, out, code, 1, fmt.Sprintf("remote setstat %q: %s", p, tc.openssh))
		})
	}
}

func TestQuirkPickUpRenamed(t *testing.T) {
	pickup := t.TempDir()
	fx := start(t, Config{Quirks: Quirks{PickUpRenamed: true, PickUpPattern: "*.csv", PickupDir: pickup}})
	cl := fx.client(t)

	part, final := filepath.Join(fx.home, ".f.csv.part"), filepath.Join(fx.home, "f.csv")
	put(t, cl, part, "data")
	if err := cl.PosixRename(part, final); err != nil {
		t.Fatalf("PosixRename: %v", err)
	}
	if _, err := cl.Stat(final); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Stat of the picked-up file: %v, want os.ErrNotExist", err)
	}
	wantFile(t, filepath.Join(pickup, "f.csv"), []byte("data"))

	// A name the pattern does not match stays.
	other := filepath.Join(fx.home, "f.txt")
	put(t, cl, part, "text")
	if err := cl.Rename(part, other); err != nil {
		t.Fatalf("Rename: %v", err)
	}
	if _, err := cl.Stat(other); err != nil {
		t.Fatalf("Stat of a file not picked up: %v", err)
	}

	ops := fx.srv.OpsOn(final)
	if got, want := kinds(ops), "posix-rename pickup stat!"; got != want {
		t.Fatalf("ops on f.csv: %s, want %s", got, want)
	}
	if ops[1].Target != filepath.Join(pickup, "f.csv") {
		t.Fatalf("pickup op %+v, want it to name where the file went", ops[1])
	}

	// Without PickupDir the file is removed; OpenSSH's sftp sees it gone.
	fx.srv.SetQuirks(Quirks{PickUpRenamed: true})
	src, _ := localFile(t, "src", 10)
	out, code := fx.sftp(t, nil, "put "+src+" "+part, "rename "+part+" "+final, "ls "+final)
	wantOutput(t, out, code, 1, fmt.Sprintf("Can't ls: %q not found", final))
	if _, err := os.Lstat(final); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("picked-up file still there: %v", err)
	}
	if st := fx.srv.Stats(); st.PickedUp != 2 {
		t.Fatalf("stats %+v, want 2 files picked up", st)
	}
}

func TestQuirkStatVFS(t *testing.T) {
	fx := start(t, Config{})
	cl := fx.client(t)

	// The real file system.
	st, err := cl.StatVFS(fx.home)
	if err != nil {
		t.Fatalf("StatVFS: %v", err)
	}
	if st.Frsize == 0 || st.Blocks == 0 || st.Bavail > st.Blocks {
		t.Fatalf("StatVFS of the real file system: %+v", st)
	}
	if _, err := cl.StatVFS(filepath.Join(fx.home, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("StatVFS of a missing path: %v, want os.ErrNotExist", err)
	}

	// A configured free space, read by the next request.
	fx.srv.SetQuirks(Quirks{FreeSpace: 12345})
	if st, err = cl.StatVFS(fx.home); err != nil {
		t.Fatal(err)
	}
	if st.FreeSpace() != 12345 || st.Bavail*st.Frsize != 12345 || st.Bavail*st.Bsize != 12345 || st.TotalSpace() != 12345+1<<30 {
		t.Fatalf("StatVFS with FreeSpace 12345: %+v (free %d)", st, st.FreeSpace())
	}
	out, code := fx.sftp(t, nil, "df "+fx.home)
	wantOutput(t, out, code, 0, "Avail")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); !strings.HasPrefix(strings.Join(strings.Fields(lines[len(lines)-1]), " "), "1048588 1048576 12 12 ") {
		t.Fatalf("df prints:\n%s\nwant size 1048588, used 1048576, avail 12 (1K blocks)", out)
	}

	// A full disk.
	fx.srv.SetQuirks(Quirks{FreeSpace: -1})
	if st, err = cl.StatVFS(fx.home); err != nil || st.FreeSpace() != 0 || st.Bavail != 0 {
		t.Fatalf("StatVFS with FreeSpace -1: %+v, %v; want nothing free", st, err)
	}
	if st := fx.srv.Stats(); st.StatVFS != 5 {
		t.Fatalf("stats %+v, want 5 statvfs requests", st)
	}

	// Not offered.
	fx.srv.SetQuirks(Quirks{NoStatVFS: true, FreeSpace: 12345})
	cl = fx.client(t)
	wantExtensions(t, cl, extPosixRename, extHardlink, extFSync)
	_, err = cl.StatVFS(fx.home)
	wantStatus(t, "StatVFS", err, sftp.ErrSSHFxOpUnsupported, "")
	out, code = fx.sftp(t, nil, "df "+fx.home)
	wantOutput(t, out, code, 1, "Server does not support statvfs@openssh.com extension")
}

func TestQuirkFSync(t *testing.T) {
	fx := start(t, Config{})
	cl := fx.client(t)

	part, final := filepath.Join(fx.home, "f.part"), filepath.Join(fx.home, "f")
	f, err := cl.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cl.PosixRename(part, final); err != nil {
		t.Fatal(err)
	}
	if st := fx.srv.Stats(); st.FSyncs != 1 {
		t.Fatalf("stats %+v, want 1 fsync", st)
	}
	// The log shows the client fsynced before it renamed.
	if got, want := kinds(fx.srv.OpsOn(part)), "open fsync close posix-rename"; got != want {
		t.Fatalf("ops on f.part: %s, want %s", got, want)
	}

	// OpenSSH's sftp fsyncs with put -f.
	src, data := localFile(t, "src", 100_000)
	out, code := fx.sftp(t, nil, "put -f "+src+" "+part)
	wantOutput(t, out, code, 0)
	wantFile(t, part, data)
	if got, want := kinds(fx.srv.OpsOn(part)), "open fsync close posix-rename stat! open fsync close"; got != want {
		t.Fatalf("ops on f.part: %s, want %s", got, want)
	}

	// Not offered: pkg/sftp does not even send it, OpenSSH's sftp skips it.
	fx.srv.SetQuirks(Quirks{NoFSync: true})
	cl = fx.client(t)
	wantExtensions(t, cl, extPosixRename, extStatVFS, extHardlink)
	f, err = cl.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantStatus(t, "Sync", f.Sync(), sftp.ErrSSHFxOpUnsupported, "fsync not supported")
	out, code = fx.sftp(t, nil, "put -f "+src+" "+part)
	wantOutput(t, out, code, 0)
	if st := fx.srv.Stats(); st.FSyncs != 2 {
		t.Fatalf("stats %+v, want still 2 fsyncs", st)
	}
}

// rawSession speaks SFTP by hand, for what the clients will not send.
type rawSession struct {
	t  *testing.T
	rw io.ReadWriter
	id uint32
}

func (fx *fixture) raw(t *testing.T) *rawSession {
	t.Helper()
	c, err := dial(t, fx, ssh.Password(testPassword))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		t.Fatal(err)
	}
	return &rawSession{t: t, rw: struct {
		io.Reader
		io.Writer
	}{r, w}}
}

// send sends a packet of type typ with body, split across writes at every
// byte to exercise the server's framing.
func (rs *rawSession) send(typ byte, body []byte) {
	rs.t.Helper()
	pkt := binary.BigEndian.AppendUint32(nil, uint32(1+len(body)))
	pkt = append(pkt, typ)
	pkt = append(pkt, body...)
	for i := range pkt {
		if _, err := rs.rw.Write(pkt[i : i+1]); err != nil {
			rs.t.Fatal(err)
		}
	}
}

// recv reads one packet and returns its type and body.
func (rs *rawSession) recv() (byte, []byte) {
	rs.t.Helper()
	var hdr [5]byte
	if _, err := io.ReadFull(rs.rw, hdr[:]); err != nil {
		rs.t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:4])-1)
	if _, err := io.ReadFull(rs.rw, body); err != nil {
		rs.t.Fatal(err)
	}
	return hdr[4], body
}

// request sends a request with a new id before rest and returns the type
// and the body of the reply after the id.
func (rs *rawSession) request(typ byte, rest []byte) (byte, []byte) {
	rs.t.Helper()
	rs.id++
	rs.send(typ, append(binary.BigEndian.AppendUint32(nil, rs.id), rest...))
	rtyp, body := rs.recv()
	if len(body) < 4 || binary.BigEndian.Uint32(body) != rs.id {
		rs.t.Fatalf("reply %d %x to request %d", rtyp, body, rs.id)
	}
	return rtyp, body[4:]
}

// status returns the code of a status reply.
func (rs *rawSession) status(typ byte, body []byte) uint32 {
	rs.t.Helper()
	if typ != 101 || len(body) < 4 { // SSH_FXP_STATUS
		rs.t.Fatalf("reply type %d %x, want a status", typ, body)
	}
	return binary.BigEndian.Uint32(body)
}

// TestRawProtocol checks the bytes: the version packet as rewritten, and an
// fsync@openssh.com request that a client sends although it was not offered.
func TestRawProtocol(t *testing.T) {
	fx := start(t, Config{Quirks: Quirks{NoExtensions: true}})
	rs := fx.raw(t)
	rs.send(1, binary.BigEndian.AppendUint32(nil, 3)) // SSH_FXP_INIT, version 3
	typ, body := rs.recv()
	if typ != 2 || !bytes.Equal(body, []byte{0, 0, 0, 3}) {
		t.Fatalf("version packet %d %x, want version 3 and no extensions", typ, body)
	}

	p := filepath.Join(fx.home, "f")
	open := appendString(nil, p)
	open = binary.BigEndian.AppendUint32(open, 0x02|0x08) // WRITE|CREAT
	open = binary.BigEndian.AppendUint32(open, 0)         // no attributes
	typ, body = rs.request(3, open)                       // SSH_FXP_OPEN
	handle, _, ok := cutString(body)
	if typ != 102 || !ok { // SSH_FXP_HANDLE
		t.Fatalf("open: reply %d %x", typ, body)
	}
	fsync := appendString(appendString(nil, extFSync), handle)
	if code := rs.status(rs.request(200, fsync)); code != 8 { // SSH_FX_OP_UNSUPPORTED
		t.Fatalf("fsync not offered: status %d, want 8 (op unsupported)", code)
	}
	for _, ext := range []string{extPosixRename, extHardlink} {
		req := appendString(appendString(appendString(nil, ext), p), p+".2")
		if code := rs.status(rs.request(200, req)); code != 8 {
			t.Fatalf("%s not offered: status %d, want 8", ext, code)
		}
	}
	if code := rs.status(rs.request(200, appendString(appendString(nil, extStatVFS), p))); code != 8 {
		t.Fatalf("statvfs not offered: status %d, want 8", code)
	}
	// An extension the server has never heard of.
	if code := rs.status(rs.request(200, appendString(nil, "nonsense@example.com"))); code != 8 {
		t.Fatalf("unknown extension: status %d, want 8", code)
	}
	if code := rs.status(rs.request(4, appendString(nil, handle))); code != 0 { // SSH_FXP_CLOSE
		t.Fatalf("close: status %d", code)
	}
	if got, want := kinds(fx.srv.OpsOn(p)), "open fsync! posix-rename! link! statvfs! close"; got != want {
		t.Fatalf("ops: %s, want %s", got, want)
	}

	// Offered: the same request flushes the file through the open handle.
	fx.srv.SetQuirks(Quirks{})
	rs = fx.raw(t)
	rs.send(1, binary.BigEndian.AppendUint32(nil, 3))
	if typ, body = rs.recv(); typ != 2 || !bytes.Contains(body, []byte(extFSync)) {
		t.Fatalf("version packet %d %q, want fsync offered", typ, body)
	}
	typ, body = rs.request(3, open)
	if handle, _, ok = cutString(body); typ != 102 || !ok {
		t.Fatalf("open: reply %d %x", typ, body)
	}
	if code := rs.status(rs.request(200, appendString(appendString(nil, extFSync), handle))); code != 0 {
		t.Fatalf("fsync: status %d, want 0", code)
	}
	if code := rs.status(rs.request(200, appendString(appendString(nil, extFSync), "bad handle"))); code == 0 {
		t.Fatalf("fsync of a bad handle succeeded")
	}
	if st := fx.srv.Stats(); st.FSyncs != 2 || st.Setstats != 0 {
		t.Fatalf("stats %+v, want 2 fsyncs (one refused) and no setstat", st)
	}
}

func TestQuirkNoExtensions(t *testing.T) {
	fx := start(t, Config{Quirks: Quirks{NoExtensions: true}})
	cl := fx.client(t)
	wantExtensions(t, cl)

	a, b := filepath.Join(fx.home, "a"), filepath.Join(fx.home, "b")
	put(t, cl, a, "data")
	wantStatus(t, "PosixRename", cl.PosixRename(a, b), sftp.ErrSSHFxOpUnsupported, "")
	wantStatus(t, "Link", cl.Link(a, b), sftp.ErrSSHFxOpUnsupported, "")
	_, err := cl.StatVFS(fx.home)
	wantStatus(t, "StatVFS", err, sftp.ErrSSHFxOpUnsupported, "")
	// Plain SFTPv3 still works.
	if err := cl.Rename(a, b); err != nil {
		t.Fatalf("Rename: %v", err)
	}
	if err := cl.Chmod(b, 0o600); err != nil {
		t.Fatalf("Chmod: %v", err)
	}

	out, code := fx.sftp(t, nil, "ln "+b+" "+a)
	wantOutput(t, out, code, 1, "Server does not support hardlink@openssh.com extension")
}

// TestQuirksPerSession checks that a session keeps the extensions it was
// offered when SetQuirks changes them.
func TestQuirksPerSession(t *testing.T) {
	fx := start(t, Config{})
	before := fx.client(t)
	fx.srv.SetQuirks(Quirks{NoPosixRename: true})
	after := fx.client(t)
	wantExtensions(t, after, extStatVFS, extHardlink, extFSync)

	a, b := filepath.Join(fx.home, "a"), filepath.Join(fx.home, "b")
	put(t, before, a, "data")
	wantStatus(t, "PosixRename in the new session", after.PosixRename(a, b), sftp.ErrSSHFxOpUnsupported, "")
	if err := before.PosixRename(a, b); err != nil {
		t.Fatalf("PosixRename in the session that was offered it: %v", err)
	}
	if q := fx.srv.Quirks(); !q.NoPosixRename {
		t.Fatalf("Quirks() = %+v", q)
	}
}

// TestSFTPChannelVersionSplit feeds the version rewriter the way pkg/sftp
// writes (header, then payload) and more packets after it.
func TestSFTPChannelVersionSplit(t *testing.T) {
	var out bytes.Buffer
	c := newSFTPChannel(struct {
		io.Reader
		io.Writer
		io.Closer
	}{nil, &out, nil}, []extension{{extFSync, "1"}})
	version := []byte{0, 0, 0, 0, fxpVersion, 0, 0, 0, 3}
	version = appendString(appendString(version, extPosixRename), "1")
	binary.BigEndian.PutUint32(version, uint32(len(version)-4))
	next := []byte{0, 0, 0, 5, 101, 1, 2, 3, 4}
	for _, chunk := range [][]byte{version[:2], version[2:9], append(version[9:], next[:3]...), next[3:], next} {
		if n, err := c.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	want := []byte{0, 0, 0, 0, fxpVersion, 0, 0, 0, 3}
	want = appendString(appendString(want, extFSync), "1")
	binary.BigEndian.PutUint32(want, uint32(len(want)-4))
	want = append(append(want, next...), next...)
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("wrote %x, want %x", out.Bytes(), want)
	}
}
