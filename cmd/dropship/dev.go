package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/internal/sftpd"
)

// devUser is the account of the built-in SFTP server in -dev mode.
const devUser = "dev"

// startDev prepares `run -dev`: folders under dir, a built-in SFTP server on a
// free loopback port with a host key kept in dir (and pinned by the config),
// a password login answered through the pty like a real partner's server, and
// a config with the embedded NATS. It prints what to do next.
func startDev(dir string, stdout io.Writer) (*config.Config, func(), error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, nil, err
	}
	drop := filepath.Join(dir, "drop")
	remote := filepath.Join(dir, "remote")
	state := filepath.Join(dir, "state")
	for _, d := range []string{drop, remote, state} {
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

	cfg := config.Default()
	cfg.Agent.StateDir = state
	cfg.Agent.ShutdownGrace = 5 * time.Second
	t := config.DefaultTarget()
	t.Name = "dev"
	t.Host = "127.0.0.1"
	t.Port = srv.Port()
	t.User = devUser
	t.PasswordFile = passwordFile
	t.HostKey = srv.HostKeyFingerprint()
	t.KnownHostsFile = filepath.Join(state, "known_hosts")
	t.RemoteDir = remote
	w := config.DefaultWatch()
	w.Path = drop
	w.Target = t.Name
	w.Settle = time.Second
	w.ArchiveDir = filepath.Join(drop, config.DefaultArchiveDir)
	cfg.Targets = []config.Target{t}
	cfg.Watches = []config.Watch{w}

	fmt.Fprintf(stdout, `dropship %s — dev mode

  drop files here:    %s
  they arrive here:   %s   (through the built-in SFTP server on 127.0.0.1:%d,
                      password login, host key pinned to %s)
  sent files go to:   %s
  events:             dropship events -nats nats://%s          (or: nats sub '%s.>')
  status:             dropship status -nats nats://%s -agent %s

  Try:  echo hello > %s
  Stop: Ctrl-C

`, version, drop, remote, srv.Port(), srv.HostKeyFingerprint(), w.ArchiveDir,
		cfg.NATS.EmbeddedListen, cfg.NATS.SubjectPrefix, cfg.NATS.EmbeddedListen, cfg.Agent.Name,
		filepath.Join(drop, "hello.txt"))
	return cfg, func() { _ = srv.Close() }, nil
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
