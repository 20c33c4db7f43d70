package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/transfer"
)

func hostkeyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("hostkey", "[-c FILE] -target NAME", stderr)
	file := fs.String("c", DefaultConfig, "configuration `file`")
	name := fs.String("target", "", "the target `name`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" || fs.NArg() > 0 {
		fs.Usage()
		return usagef("hostkey needs -target NAME and nothing else")
	}
	cfg, err := loadConfig(*file, stderr)
	if err != nil {
		return err
	}
	t, err := agent.HostKeyTarget(cfg, *name)
	if err != nil {
		return err
	}
	hctx, cancel := context.WithTimeout(ctx, t.ConnectTimeout+30*time.Second)
	defer cancel()
	hk, err := transfer.FetchHostKey(hctx, t, transfer.Options{})
	if err != nil {
		return fmt.Errorf("fetch the host key of %s (%s port %d): %w", *name, t.Host, t.Port, err)
	}
	fmt.Fprintf(stdout, "%s\n", hk.Fingerprint)
	fmt.Fprintf(stderr, "%s port %d presents an %s key. Check this fingerprint with the server's administrator over another channel, then pin it:\n\n  [[target]]\n  name = %q\n  host_key = %q\n", t.Host, t.Port, hk.Type, *name, hk.Fingerprint)
	return nil
}
