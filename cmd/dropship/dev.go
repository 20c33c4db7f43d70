package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/sftpd"
)

// devUser is the account of the built-in SFTP server in -dev mode.
const devUser = "dev"

// startDev prepares `run -dev`: folders under dir, a built-in SFTP server on a
// free loopback port with a host key kept in dir (and pinned by the config),
// a password login answered through the pty like a real partner's server, and
// a config with the embedded NATS, written to dir/agent.toml and loaded from
// there like any other. It prints what to do next, as commands that work as
// printed (see selfCommand).
func startDev(dir string, stdout io.Writer) (*config.Config, func(), error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, err
	}
	drop := filepath.Join(dir, "drop")
	remote := filepath.Join(dir, "remote")
	state := filepath.Join(dir, "state")
	outbox := filepath.Join(dir, "partner-outbox")
	for _, d := range []string{drop, remote, state, outbox} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, nil, fmt.Errorf("prepare -dev folders: %w", err)
		}
	}
	passwordFile := filepath.Join(dir, "password")
	password, err := devPassword(passwordFile)
	if err != nil {
		return nil, nil, err
	}
	srv, err := sftpd.New(sftpd.Config{
		Listen:      "127.0.0.1:0",
		HostKeyFile: filepath.Join(dir, "sftpd_host_key"),
		Home:        remote,
		Users:       map[string]sftpd.Account{devUser: {Password: password}},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("start the built-in SFTP server: %w", err)
	}

	natsListen, natsNote := devNATSListen()
	file := filepath.Join(dir, "agent.toml")
	conf := devConfig(devFiles{
		state: state, drop: drop, remote: remote, outbox: outbox, password: passwordFile,
		port: srv.Port(), hostKey: srv.HostKeyFingerprint(), natsListen: natsListen,
	})
	if err := os.WriteFile(file, []byte(conf), 0o640); err != nil {
		_ = srv.Close()
		return nil, nil, fmt.Errorf("write the -dev configuration: %w", err)
	}
	// The agent runs the file it wrote, read back like any other.
	cfg, err := config.Load(file)
	if err != nil {
		_ = srv.Close()
		return nil, nil, fmt.Errorf("the -dev configuration %s (this is a bug): %w", file, err)
	}
	natsURL := "nats://" + cfg.NATS.EmbeddedListen
	cwd, _ := os.Getwd()
	exe, _ := os.Executable()
	self := selfCommand(exe, cwd, exec.LookPath)
	c := shellQuote(file)
	if natsNote != "" {
		natsNote = "  (" + natsNote + ")"
	}
	fmt.Fprintf(stdout, `dropship %s: try-out mode (run -dev)

  drop files here:    %s
  they arrive here:   %s   (through the built-in SFTP server on 127.0.0.1:%d,
                      password login, host key pinned to %s)
  sent files go to:   %s
  relayed from here:  %s   (a [[source]]: a partner's outbox on the same server,
                      listed every 2s, each file fetched, sent to the target,
                      then deleted here)
  configuration:      %s   (what this agent runs; copy it to start your own)
  NATS:               %s, embedded%s

  In another terminal:
    echo hello > %s
    echo relayed > %s
    %s events -c %s      # live, with progress bars
    %s status -c %s
    %s check -c %s
    nats sub -s %s '%s.>'      # with the nats CLI

  Stop: Ctrl-C

`, version, drop, remote, srv.Port(), srv.HostKeyFingerprint(), filepath.Join(drop, config.DefaultArchiveDir), outbox, file,
		natsURL, natsNote,
		shellQuote(filepath.Join(drop, "hello.txt")),
		shellQuote(filepath.Join(outbox, "relayed.txt")),
		self, c, self, c, self, c,
		natsURL, cfg.NATS.SubjectPrefix)
	return cfg, func() { _ = srv.Close() }, nil
}

// devNATSListen is the embedded NATS address of -dev: 127.0.0.1:4222, or a
// free port when something else has 4222 (a NATS server, another -dev), with
// a note saying so.
func devNATSListen() (listen, note string) {
	const preferred = "127.0.0.1:4222"
	l, err := net.Listen("tcp", preferred)
	if err == nil {
		_ = l.Close()
		return preferred, ""
	}
	if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return preferred, "" // the agent will say what is wrong
	}
	listen = l.Addr().String()
	_ = l.Close()
	return listen, preferred + " is taken"
}

// devFiles are the values of the -dev configuration.
type devFiles struct {
	state, drop, remote, outbox, password string
	port                                  int
	hostKey, natsListen                   string
}

// devConfig is the agent.toml of -dev.
func devConfig(f devFiles) string {
	return fmt.Sprintf(`# The configuration of "dropship run -dev", rewritten at each start: copy it
# to start your own (see /usr/share/doc/dropship/agent.toml.example or
# agent.toml.example for every key). The SFTP server of its target is the one
# built into "run -dev": it runs only while "run -dev" does.

[agent]
state_dir = %s
shutdown_grace = "5s"

[nats]
url = ""                        # empty: an embedded NATS server (with JetStream)
embedded_listen = %s

[[target]]
name = "dev"
host = "127.0.0.1"
port = %d
user = %s
password_file = %s
host_key = %s   # pinned: the built-in server's key
remote_dir = %s

[[watch]]
path = %s
target = "dev"
settle = "1s"
after = "archive"               # into <path>/.dropship-sent

# A partner's outbox to pull from, on the same built-in server: each file is
# fetched once stable, sent to the target, then deleted from the outbox.
[[source]]
name = "partner"
host = "127.0.0.1"
port = %d
user = %s
password_file = %s
host_key = %s
remote_dir = %s
interval = "2s"
target = "dev"
after = "delete"
`, tomlString(f.state), tomlString(f.natsListen), f.port, tomlString(devUser), tomlString(f.password),
		tomlString(f.hostKey), tomlString(f.remote), tomlString(f.drop),
		f.port, tomlString(devUser), tomlString(f.password), tomlString(f.hostKey), tomlString(f.outbox))
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// selfCommand is how to run this dropship again from a shell in dir, so
// that the commands -dev prints work as printed: "dropship" when PATH finds
// this executable; "go run ./cmd/dropship" (relative to dir) when it was
// started by go run from within the module, whose executable is a temporary
// one; its absolute path otherwise.
func selfCommand(exe, dir string, lookPath func(string) (string, error)) string {
	if exe == "" {
		return "dropship"
	}
	if p, err := lookPath("dropship"); err == nil && sameFile(p, exe) {
		return "dropship"
	}
	if goRunExecutable(exe) {
		if root := moduleRoot(dir); root != "" {
			rel, err := filepath.Rel(dir, filepath.Join(root, "cmd", "dropship"))
			if err == nil {
				if rel == "." || strings.HasPrefix(rel, "..") {
					return "go run " + shellQuote(rel)
				}
				return "go run " + shellQuote("./"+rel)
			}
		}
		// Outside the module go run cannot find the package again, but its
		// executable stays while this process runs, as long as the
		// commands printed are of use.
	}
	return shellQuote(exe)
}

// goRunExecutable reports whether exe is one go run built: in a temporary
// go-build folder (…/go-build123/b001/exe/dropship) or, since Go 1.24, in the
// build cache (…/go-build/98/98…a4-d/dropship).
func goRunExecutable(exe string) bool {
	dir := filepath.Dir(exe)
	if parent := filepath.Base(dir); parent != "exe" && !strings.HasSuffix(parent, "-d") {
		return false
	}
	for _, part := range strings.Split(filepath.Dir(dir), string(filepath.Separator)) {
		if strings.HasPrefix(part, "go-build") {
			return true
		}
	}
	return false
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// moduleRoot is the folder at or above dir whose go.mod is dropship's, or "".
func moduleRoot(dir string) string {
	for d := dir; ; {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
					if strings.Trim(f[1], `"`) == "github.com/dropship/dropship" {
						return d
					}
					return ""
				}
			}
		}
		parent := filepath.Dir(d)
		if parent == d {
			return ""
		}
		d = parent
	}
}

// devPassword returns the -dev password, creating it (mode 0600) on first use.
func devPassword(file string) (string, error) {
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		b, err := config.ReadSecret(file)
		if err != nil {
			return "", fmt.Errorf("-dev password file: %w", err)
		}
		return string(b), nil
	}
	raw := make([]byte, 12)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	pw := hex.EncodeToString(raw)
	if err := os.WriteFile(file, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write -dev password file: %w", err)
	}
	return pw, nil
}
