package config

import (
	"path/filepath"
	"testing"
	"time"
)

// A [[source]] takes a target's connection keys, its own polling keys, and
// refuses what cannot work, each at its line.
func TestSourceProblems(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "pickup.key", "key\n", 0o644)
	loadCase(t, dir, `
[[target]]
name = "acme"
host = "sftp.acme.example"
user = "upload"

[[source]]
name = "customer"
host = "sftp.customer.example"
user = "pickup"
identity_file = "pickup.key"     #! source.identity_file: is open to group or others (mode 0644); run chmod 600 $DIR/pickup.key
remote_dir = "/outgoing"
targets = ["acme", "acmee"]      #! source.targets: no [[target]] named "acmee"; did you mean acme?
overwrite = false                #! source.overwrite: is a [[target]] key; a [[source]] only reads from its server: remove it
protocol = "scp"                 #! source.protocol: a source needs SFTP to list its folder
interval = "0s"                  #! source.interval: must be more than 0
after = "move"                   #! source.after: after = "move" needs move_dir
settle = "2s"                    #! source.settle: unknown key; settle belongs in [[watch]]

[[source]]
name = "customer"                #! source.name: duplicate source name "customer"
host = "sftp.other.example"
user = "pickup"
target = "acme"
after = "delete"
move_dir = "/done"               #! source.move_dir: is only used with after = "move"

[[source]]
name = "loop"
host = "sftp.other.example"
user = "pickup"
target = "acme"
remote_dir = "/out"
after = "move"
move_dir = "/out/"               #! source.move_dir: is remote_dir itself
`)
}

// A well-formed source gets its defaults, and a spool watch under state_dir
// that deletes each file once every target has it.
func TestSourceDefaultsAndSpool(t *testing.T) {
	dir := t.TempDir()
	cfg := loadCase(t, dir, `
[agent]
state_dir = "$DIR/state"

[[target]]
name = "acme"
host = "sftp.acme.example"
user = "upload"

[[target]]
name = "backup"
host = "backup.example"
user = "upload"

[[source]]
name = "customer"
host = "sftp.customer.example"
user = "pickup"
targets = ["acme", "backup"]
`)
	if len(cfg.Sources) != 1 {
		t.Fatalf("sources: %+v", cfg.Sources)
	}
	s := cfg.Sources[0]
	if s.Interval != time.Minute || s.After != AfterKeep || s.Recursive || s.Conn.RemoteDir != "." || s.Conn.Port != 22 ||
		s.Conn.KnownHostsFile != filepath.Join(dir, "state", "known_hosts") || s.Remember != 30*24*time.Hour {
		t.Errorf("defaults: %+v", s)
	}
	all := cfg.AllWatches()
	if len(all) != 1 {
		t.Fatalf("watches with the spool: %+v", all)
	}
	w := all[0]
	if w.Path != filepath.Join(dir, "state", "spool", "customer") || w.Source != "customer" || w.After != AfterDelete ||
		len(w.Targets) != 2 || !w.Recursive {
		t.Errorf("spool watch: %+v", w)
	}
}
