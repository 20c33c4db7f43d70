package config

import (
	"os"
	"path/filepath"
	"testing"
)

// Watched folders must not be /, the state_dir, inside it or around it, nor
// overlap each other, however the path is written.
func TestWatchPlaces(t *testing.T) {
	for _, tc := range []struct{ name, src string }{
		{"root", target + `
[[watch]]
path = "/" #! watch.path: must not be / : every file on the system would be sent
target = "acme"
[[watch]]
path = "/srv/.." #! watch.path: must not be / #! watch.path: / is already watched by the [[watch]] at line 7
target = "acme"
`},
		{"watch is state_dir", "[agent]\nstate_dir = \"/var/lib/dropship\"\n" + target + `
[[watch]]
path = "/var/lib/dropship/../dropship" #! watch.path: /var/lib/dropship is agent.state_dir, where dropship keeps its journal and keys
target = "acme"
`},
		{"watch inside state_dir", target + `
[[watch]]
path = "/var/lib/dropship/journal" #! watch.path: /var/lib/dropship/journal is inside agent.state_dir /var/lib/dropship
target = "acme"
`},
		{"watch contains state_dir", target + `
[[watch]]
path = "/var/lib" #! watch.path: /var/lib contains agent.state_dir /var/lib/dropship, so dropship's journal and keys would be sent
target = "acme"
`},
		{"next to state_dir", target + `
[[watch]]
path = "/var/lib/dropshipper"
target = "acme"
`},
		{"relative state_dir inside a watch", `[agent]
state_dir = "state"
` + target + `
[[watch]]
path = "." #! watch.path: /etc/dropship contains agent.state_dir /etc/dropship/state
target = "acme"
`},
		{"overlaps however written", target + `
[[watch]]
path = "/srv/drop"
target = "acme"
[[watch]]
path = "/srv/../srv/drop" #! watch.path: /srv/drop is already watched by the [[watch]] at line 7
target = "acme"
[[watch]]
path = "/srv/drop/./a//b/" #! watch.path: /srv/drop/a/b is inside /srv/drop, watched by the [[watch]] at line 7
target = "acme"
[[watch]]
path = "/srv/dropbox"
target = "acme"
`},
	} {
		t.Run(tc.name, func(t *testing.T) { parseCase(t, tc.src) })
	}
}

// Symbolic links cannot hide a watch on state_dir or an overlap.
func TestWatchPlacesSymlinks(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"state/sub", "real/a"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, to := range map[string]string{"state-link": "state", "sub-link": "state/sub", "real-link": "real"} {
		if err := os.Symlink(filepath.Join(dir, to), filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	loadCase(t, dir, `[agent]
state_dir = "state-link"
`+target+`
[[watch]]
path = "sub-link" #! watch.path: $DIR/sub-link, once symlinks are resolved: $DIR/state/sub is inside agent.state_dir $DIR/state
target = "acme"
[[watch]]
path = "real/a"
target = "acme"
[[watch]]
path = "real-link" #! watch.path: $DIR/real-link, once symlinks are resolved: $DIR/real contains $DIR/real/a, watched by the [[watch]] at line 12
target = "acme"
`)
	// A state_dir not created yet is resolved as far as it exists.
	loadCase(t, dir, `[agent]
state_dir = "state-link/new"
`+target+`
[[watch]]
path = "state/new/.." #! watch.path: $DIR/state, once symlinks are resolved: $DIR/state contains agent.state_dir $DIR/state/new
target = "acme"
`)
}
