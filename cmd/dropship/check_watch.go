package main

import (
	"fmt"
	"io"

	"github.com/dropship/dropship/internal/agent"
	"github.com/dropship/dropship/internal/config"
)

// checkWatches reports what the agent's user could not do with the watch
// folders (errors, as FILE:LINE: key: message on stderr, exit status 2) and
// what puts readiness or post-processing at risk (warnings, on stdout).
func checkWatches(cfg *config.Config, stdout, stderr io.Writer) error {
	if len(cfg.Watches) == 0 {
		return nil
	}
	u, why, findings := agent.CheckWatches(cfg)
	fmt.Fprintf(stdout, "watch folders checked as %s (%s)\n", u, why)
	errs := 0
	for _, f := range findings {
		p := config.Problem{File: cfg.File, Line: f.Watch.Line, Key: f.Key, Message: f.Message}
		if f.Error {
			errs++
			fmt.Fprintln(stderr, p)
			continue
		}
		p.Message = "warning: " + p.Message
		fmt.Fprintln(stdout, p)
	}
	if errs > 0 {
		fmt.Fprintf(stderr, "dropship: %s: %d problem(s)\n", cfg.File, errs)
		return silentExit{code: 2}
	}
	return nil
}
