package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/dropship/dropship/internal/access"
	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/watcher"
)

// WatchFinding is something `dropship check` reports about a watch: a
// folder the agent's user cannot read or write (an error), or a risk to
// readiness or post-processing (a warning).
type WatchFinding struct {
	Watch   *config.Watch
	Key     string // "watch.path", "watch.archive_dir" or "watch.failed_dir"
	Error   bool
	Message string
}

// maxSubfolders bounds the sub-folders CheckWatches looks at per watch.
const maxSubfolders = 2000

// AgentUser is the user `dropship check` takes the agent to run as, and
// why. Run by another user than root, it is that user: an agent is
// normally checked by whoever runs it. Run by root, it is the owner of
// state_dir when that exists and is not root's (the packaged service's
// /var/lib/dropship belongs to the dropship user, which its unit runs as),
// else root.
func AgentUser(cfg *config.Config) (access.User, string) {
	me := access.Current()
	fi, err := os.Stat(cfg.Agent.StateDir)
	var st *syscall.Stat_t
	if err == nil {
		st, _ = fi.Sys().(*syscall.Stat_t)
	}
	if me.UID != 0 {
		if st != nil && int(st.Uid) != me.UID {
			return me, fmt.Sprintf("the user running check; state_dir belongs to %s: run check as root to check as that user", userName(int(st.Uid)))
		}
		return me, "the user running check"
	}
	if st == nil {
		return me, "state_dir does not exist yet"
	}
	if st.Uid == 0 {
		return me, "the owner of state_dir " + cfg.Agent.StateDir
	}
	u, err := access.Lookup(int(st.Uid))
	if err != nil {
		u = access.User{Name: "uid " + strconv.Itoa(int(st.Uid)), UID: int(st.Uid), GID: int(st.Gid)}
	}
	return u, "the owner of state_dir " + cfg.Agent.StateDir + ", the user the service runs as"
}

// CheckWatches checks every watch folder as the agent's user (see
// AgentUser) would use it: it must be able to list it, and to write it
// when `after` archives or deletes (and archive_dir and failed_dir, or the
// folder they would be created in). Sub-folders it could not archive or
// delete from are warnings, as is a watch whose readiness would rest on the
// settle period alone (see watcher.ReadinessRisk).
func CheckWatches(cfg *config.Config) (access.User, string, []WatchFinding) {
	u, why := AgentUser(cfg)
	var out []WatchFinding
	add := func(w *config.Watch, key string, isErr bool, format string, args ...any) {
		out = append(out, WatchFinding{Watch: w, Key: key, Error: isErr, Message: fmt.Sprintf(format, args...)})
	}
	ab, abKnown := agentAbilities(cfg, u)
	for i := range cfg.Watches {
		w := &cfg.Watches[i]
		if fi, err := os.Stat(w.Path); err != nil || !fi.IsDir() {
			continue // the config check reports it
		}
		reqs := []access.Request{{Path: w.Path, Mode: access.Read | access.Exec}}
		writes := w.After == config.AfterArchive || w.After == config.AfterDelete
		if writes {
			reqs = append(reqs, access.Request{Path: w.Path, Mode: access.Write | access.Exec})
		}
		type dirReq struct{ key, dir string }
		var dirs []dirReq
		if w.After == config.AfterArchive && w.ArchiveDir != "" {
			dirs = append(dirs, dirReq{"watch.archive_dir", w.ArchiveDir})
		}
		if w.FailedDir != "" {
			dirs = append(dirs, dirReq{"watch.failed_dir", w.FailedDir})
		}
		for _, d := range dirs {
			reqs = append(reqs, access.Request{Path: existingAncestor(d.dir), Mode: access.Write | access.Exec})
		}
		errs, err := access.Check(u, reqs)
		if err != nil {
			add(w, "watch.path", false, "cannot check access as %s (%s): %v", u, why, err)
			continue
		}
		if errs[0] != nil {
			add(w, "watch.path", true, "%s (%s) cannot list %s (%s): %s; give it read and search access (e.g. chgrp %s %s && chmod g+rx %s)",
				u, why, w.Path, access.Describe(w.Path), reason(errs[0]), groupOf(u), w.Path, w.Path)
			continue
		}
		next := 1
		if writes {
			if errs[1] != nil {
				what := "archives sent files (after = \"archive\")"
				if w.After == config.AfterDelete {
					what = "deletes sent files (after = \"delete\")"
				}
				add(w, "watch.path", true, "%s (%s) cannot write %s (%s), and this watch %s: %s; make it writable for %s (e.g. chgrp %s %s && chmod 2770 %s), or set after = \"keep\"",
					u, why, w.Path, access.Describe(w.Path), what, reason(errs[1]), u, groupOf(u), w.Path, w.Path)
			}
			next = 2
		}
		for j, d := range dirs {
			if e := errs[next+j]; e != nil {
				p := reqs[next+j].Path
				if p == w.Path && writes && errs[1] != nil {
					continue // said above
				}
				add(w, d.key, true, "%s (%s) cannot create or write %s: %s is not writable for it (%s): %s", u, why, d.dir, p, access.Describe(p), reason(e))
			}
		}
		if writes && w.Recursive {
			if msg := unwritableSubfolders(u, w); msg != "" {
				add(w, "watch.path", false, "%s", msg)
			}
		}
		risk := watcher.ReadinessRisk(w.Path, w.Settle, w.ReadyMarker, ab)
		if risk != "" && !abKnown {
			risk = "unless the agent runs with CAP_LEASE (the packaged unit grants it: AmbientCapabilities=CAP_LEASE; `dropship run` from a shell does not have it): " + risk
		}
		if risk != "" {
			add(w, "watch.path", false, "%s", risk)
		}
	}
	return u, why, out
}

// unwritableSubfolders names the sub-folders of w (at most maxSubfolders
// looked at) whose files u could not archive or delete, with the fix; ""
// when there are none.
func unwritableSubfolders(u access.User, w *config.Watch) string {
	var dirs []string
	_ = filepath.WalkDir(w.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == w.Path {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") || p == w.ArchiveDir || p == w.FailedDir {
			return filepath.SkipDir // never watched
		}
		if len(dirs) >= maxSubfolders {
			return filepath.SkipAll
		}
		dirs = append(dirs, p)
		return nil
	})
	reqs := make([]access.Request, len(dirs))
	for i, d := range dirs {
		reqs[i] = access.Request{Path: d, Mode: access.Write | access.Exec}
	}
	errs, err := access.Check(u, reqs)
	if err != nil {
		return ""
	}
	var bad []string
	for i, e := range errs {
		if e != nil {
			bad = append(bad, fmt.Sprintf("%s (%s)", dirs[i], access.Describe(dirs[i])))
		}
	}
	if len(bad) == 0 {
		return ""
	}
	more := ""
	if len(bad) > 3 {
		more = fmt.Sprintf(" and %d more", len(bad)-3)
		bad = bad[:3]
	}
	return fmt.Sprintf("%s cannot write the sub-folder(s) %s%s: their files are delivered but stay there, never archived or deleted; make them writable for %s (chmod g+w, with the watch folder setgid so that new sub-folders get its group, and uploaders' umask 002 or 007, or a default ACL: setfacl -R -m d:g:%s:rwX,g:%s:rwX %s)",
		u, strings.Join(bad, ", "), more, u, groupOf(u), groupOf(u), w.Path)
}

// existingAncestor is dir, or its nearest parent that exists: where
// MkdirAll would have to create the rest.
func existingAncestor(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			return d
		}
	}
}

func reason(err error) string {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	case errors.Is(err, syscall.EROFS):
		return "read-only file system"
	}
	return err.Error()
}

// groupOf names u's primary group, for a chgrp command.
func groupOf(u access.User) string { return groupName(u.GID) }

// agentAbilities returns what the agent running as u can see of other
// users' writers, and whether that is known: root's are (it has CAP_LEASE);
// a running agent's are read from /proc; otherwise, for check's own user,
// not (a service gets its capabilities from its unit, which check does not
// see), and the answer assumes none.
func agentAbilities(cfg *config.Config, u access.User) (watcher.Abilities, bool) {
	if u.UID == 0 {
		return watcher.Abilities{UID: 0, Lease: true, AllProcs: true}, true
	}
	if pid := runningAgent(cfg, u.UID); pid > 0 {
		if ab, err := watcher.AbilitiesOf(pid); err == nil {
			return ab, true
		}
	}
	return watcher.Abilities{UID: u.UID}, false
}

// runningAgent finds a `dropship run` of cfg's file running as uid, by
// /proc; 0 when there is none (or /proc does not tell).
func runningAgent(cfg *config.Config, uid int) int {
	file := cfg.File
	if file == "" {
		return 0
	}
	absFile, _ := filepath.Abs(file)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir := "/proc/" + e.Name()
		fi, err := os.Stat(dir)
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != uid {
			continue
		}
		b, err := os.ReadFile(dir + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		if filepath.Base(args[0]) != "dropship" || len(args) < 2 || args[1] != "run" {
			continue
		}
		cwd, _ := os.Readlink(dir + "/cwd")
		conf := "/etc/dropship/agent.toml" // run's default
		for i, a := range args[2:] {
			switch {
			case (a == "-c" || a == "--c") && i+3 < len(args):
				conf = args[i+3]
			case strings.HasPrefix(a, "-c="):
				conf = strings.TrimPrefix(a, "-c=")
			}
		}
		if !filepath.IsAbs(conf) && cwd != "" {
			conf = filepath.Join(cwd, conf)
		}
		if conf == absFile {
			return pid
		}
	}
	return 0
}
