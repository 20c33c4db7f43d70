package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/internal/config"
)

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "[-c FILE | -dev]", stderr)
	file := fs.String("c", DefaultConfig, "configuration `file`")
	dev := fs.Bool("dev", false, "try-out mode: embedded NATS, a built-in SFTP server and folders under ./dropship-dev, no config needed")
	devDir := fs.String("dev-dir", "dropship-dev", "with -dev: the folder for the drop and remote folders and state")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("run takes no arguments, got %q", fs.Args())
	}
	var cfg *config.Config
	var cleanup func()
	if *dev {
		var err error
		cfg, cleanup, err = startDev(*devDir, stdout)
		if err != nil {
			return err
		}
		defer cleanup()
	} else {
		var err error
		if cfg, err = loadConfigContext(ctx, *file, stderr); errors.Is(err, errInterrupted) {
			return nil // stopped before it started: a clean stop all the same
		} else if err != nil {
			return err
		}
	}
	level := new(slog.LevelVar) // a reload changes it
	level.Set(agent.LevelOf(cfg.Agent.LogLevel))
	logger := newLeveledLogger(cfg, level, stderr)
	a, err := agent.New(cfg, agent.Options{
		Logger:   logger,
		LogLevel: level,
		Version:  version,
		Notify: func(state string) {
			_, _ = daemon.SdNotify(false, state)
		},
	})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	return a.Run(ctx, reload)
}

// newLogger builds the agent's logger from agent.log_level and log_format.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	return newLeveledLogger(cfg, agent.LevelOf(cfg.Agent.LogLevel), w)
}

// newLeveledLogger builds a logger of agent.log_format at level.
func newLeveledLogger(cfg *config.Config, level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if cfg.Agent.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("agent", cfg.Agent.Name)
}
