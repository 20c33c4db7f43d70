package main

import (
	"context"
	"fmt"
	"io"

	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/transfer"
)

func sendCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("send", "[-c FILE] -target NAME FILE...", stderr)
	file := fs.String("c", DefaultConfig, "configuration `file`")
	name := fs.String("target", "", "the target `name`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" || fs.NArg() == 0 {
		fs.Usage()
		return usagef("send needs -target NAME and at least one file")
	}
	cfg, err := loadConfig(*file, stderr)
	if err != nil {
		return err
	}
	results, err := agent.Send(ctx, cfg, *name, fs.Args(), agent.Options{Logger: newLogger(cfg, stderr), Version: version})
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
			fmt.Fprintf(stdout, "FAILED %s: %s: %v\n", r.File, transfer.ClassOf(r.Err), r.Err)
			continue
		}
		fmt.Fprintf(stdout, "sent %s -> %s:%s\n", r.File, *name, r.RemotePath)
	}
	if failed > 0 {
		return silentExit{code: 1}
	}
	return nil
}
