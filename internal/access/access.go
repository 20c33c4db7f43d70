package access

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// Modes a Request asks for, as access(2) takes them.
const (
	Read  = 4
	Write = 2
	Exec  = 1 // for a folder: search (open what is in it)
)

// User is someone whose access is checked.
type User struct {
	Name     string
	UID, GID int
	Groups   []int // supplementary groups, as initgroups(3) would set them
}

func (u User) String() string { return u.Name }

// Lookup returns the user uid, with its groups.
func Lookup(uid int) (User, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return User{}, err
	}
	gid, _ := strconv.Atoi(u.Gid)
	out := User{Name: u.Username, UID: uid, GID: gid}
	ids, _ := u.GroupIds()
	for _, s := range ids {
		if g, err := strconv.Atoi(s); err == nil {
			out.Groups = append(out.Groups, g)
		}
	}
	return out, nil
}

// Current is the user this process runs as (its effective ids and groups).
func Current() User {
	u := User{Name: "uid " + strconv.Itoa(os.Geteuid()), UID: os.Geteuid(), GID: os.Getegid()}
	if lu, err := user.LookupId(strconv.Itoa(u.UID)); err == nil {
		u.Name = lu.Username
	}
	u.Groups, _ = os.Getgroups()
	return u
}

// Request is one access to check.
type Request struct {
	Path string
	Mode uint32 // Read, Write, Exec, or'ed
}

// Check returns, for each request, nil when u may access its path so, or
// why not (wrapping fs.ErrPermission, syscall.EROFS, fs.ErrNotExist, ...).
// The error is for the check as a whole: u is another user and this
// process is not root, or the kernel cannot check.
func Check(u User, reqs []Request) ([]error, error) {
	return check(u, reqs)
}

// Describe says whose path p is and its mode, for a message: "owner alice,
// group staff, mode drwxr-x---".
func Describe(p string) string {
	fi, err := os.Stat(p)
	if err != nil {
		return err.Error()
	}
	return describe(fi)
}

func describe(fi fs.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "mode " + fi.Mode().String()
	}
	return fmt.Sprintf("owner %s, group %s, mode %s", userName(int(st.Uid)), groupName(int(st.Gid)), fi.Mode().String())
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + strconv.Itoa(uid)
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil && g.Name != "" {
		return g.Name
	}
	return "gid " + strconv.Itoa(gid)
}
