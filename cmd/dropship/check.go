package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/internal/config"
	"github.com/dropship/dropship/transfer"
)

func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", "[-c FILE] [-connect]", stderr)
	file := fs.String("c", DefaultConfig, "configuration `file`")
	connect := fs.Bool("connect", false, "also log in to every target and source (host key, credentials, remote_dir) without sending or fetching anything")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("check takes no arguments, got %q", fs.Args())
	}
	cfg, err := loadConfigContext(ctx, *file, stderr)
	if err != nil {
		return err
	}
	if err := checkWatches(cfg, stdout, stderr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d target(s), %d watch(es)%s)\n", cfg.File, len(cfg.Targets), len(cfg.Watches), sourcesCount(cfg))
	if !*connect {
		return nil
	}
	failed := 0
	for _, tc := range cfg.Targets {
		if ctx.Err() != nil {
			return errInterrupted
		}
		proto, err := checkTarget(ctx, cfg, tc.Name, tc.RemoteDir)
		if err != nil {
			failed++
			msg := err.Error()
			var te *transfer.Error
			if errors.As(err, &te) {
				msg = te.Message
			}
			fmt.Fprintf(stdout, "target %s: FAILED (%s): %s\n", tc.Name, transfer.ClassOf(err), msg)
			continue
		}
		fmt.Fprintf(stdout, "target %s: ok: logged in as %s at %s port %d (host key %s), remote_dir %q is a folder, protocol %s\n", tc.Name, tc.User, tc.Host, tc.Port, tc.HostKey, tc.RemoteDir, proto)
	}
	for _, sc := range cfg.Sources {
		if ctx.Err() != nil {
			return errInterrupted
		}
		dirs := []string{sc.Conn.RemoteDir}
		if sc.After == config.AfterMove {
			dirs = append(dirs, sc.MoveDir)
		}
		if err := checkSource(ctx, cfg, sc.Name(), dirs); err != nil {
			failed++
			msg := err.Error()
			var te *transfer.Error
			if errors.As(err, &te) {
				msg = te.Message
			}
			fmt.Fprintf(stdout, "source %s: FAILED (%s): %s\n", sc.Name(), transfer.ClassOf(err), msg)
			continue
		}
		fmt.Fprintf(stdout, "source %s: ok: logged in as %s at %s port %d (host key %s), %q is a folder\n", sc.Name(), sc.Conn.User, sc.Conn.Host, sc.Conn.Port, sc.Conn.HostKey, strings.Join(dirs, `" and "`))
	}
	if !checkNATS(ctx, cfg, stdout) {
		failed++
	}
	if failed > 0 {
		return silentExit{code: 1}
	}
	return nil
}

// checkSource logs in to source name over SFTP and checks that dirs are
// folders.
func checkSource(ctx context.Context, cfg *config.Config, name string, dirs []string) error {
	client, _, cleanup, err := agent.Client(cfg, name, agent.Options{})
	if err != nil {
		return err
	}
	defer cleanup()
	sc := cfg.Source(name)
	cctx, cancel := context.WithTimeout(ctx, sc.Conn.ConnectTimeout+30*time.Second)
	defer cancel()
	for _, d := range dirs {
		if _, err := client.List(cctx, d, false); err != nil {
			return err
		}
	}
	return nil
}

// checkTarget logs in to target name and checks remoteDir; it returns the
// protocol the target speaks (with protocol = "auto", the one it chose).
func checkTarget(ctx context.Context, cfg *config.Config, name, remoteDir string) (string, error) {
	client, _, cleanup, err := agent.Client(cfg, name, agent.Options{})
	if err != nil {
		return "", err
	}
	defer cleanup()
	tc := cfg.Target(name)
	cctx, cancel := context.WithTimeout(ctx, tc.ConnectTimeout+30*time.Second)
	defer cancel()
	if err := client.Check(cctx, remoteDir); err != nil {
		return "", err
	}
	return client.Protocol(), nil
}

// sourcesCount is ", N source(s)" when there are sources.
func sourcesCount(cfg *config.Config) string {
	if len(cfg.Sources) == 0 {
		return ""
	}
	return fmt.Sprintf(", %d source(s)", len(cfg.Sources))
}
