// Command dropship watches drop folders and pushes every finished file to an
// SSH/SFTP server with the real OpenSSH client, publishing events on NATS.
//
// Exit status (the one place it is decided, see exitCode):
//
//	0  success
//	1  a runtime failure: a transfer failed, a server could not be reached
//	2  a usage or configuration error: fix the command line or the file
//
// SIGINT and SIGTERM are answered at once, at any point: `run` stops
// gracefully (running transfers get agent.shutdown_grace) and exits 0; any
// other command stops what it was doing and exits 1, as it did not finish.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/dropship/dropship/internal/config"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

// DefaultConfig is where the packaged service keeps its configuration.
const DefaultConfig = "/etc/dropship/agent.toml"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, errSilent) {
		fmt.Fprintln(os.Stderr, "dropship:", err)
	}
	os.Exit(exitCode(err))
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// errSilent is an error whose explanation was already printed.
var errSilent = errors.New("already reported")

// silentExit carries an exit status whose explanation was already printed.
type silentExit struct{ code int }

func (e silentExit) Error() string   { return errSilent.Error() }
func (e silentExit) Is(t error) bool { return t == errSilent }

// exitCode maps an error to the process's exit status.
func exitCode(err error) int {
	var ue *usageError
	var problems config.Problems
	var se silentExit
	switch {
	case err == nil:
		return 0
	case errors.As(err, &se):
		return se.code
	case errors.As(err, &ue), errors.As(err, &problems), errors.Is(err, flag.ErrHelp):
		return 2
	default:
		return 1
	}
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run the agent in the foreground", runCmd},
		{"check", "validate the configuration (with -connect: log in to every target)", checkCmd},
		{"send", "send files once through the same engine", sendCmd},
		{"events", "show events live (progress bars, or -json for scripts)", eventsCmd},
		{"status", "ask a running agent for its queues and targets", statusCmd},
		{"retry", "ask a running agent to send failed files again", retryCmd},
		{"hostkey", "print a target's host key fingerprint, for pinning", hostkeyCmd},
		{"version", "print the version", versionCmd},
	}
}

// Run is the whole program: it dispatches to a subcommand.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return usagef("no command given")
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return nil
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return nil
		}
		return Run(ctx, []string{args[1], "-h"}, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			var help *helpRequest
			if errors.As(err, &help) {
				help.fs.SetOutput(stdout)
				help.fs.Usage()
				return nil
			}
			return err
		}
	}
	usage(stderr)
	return usagef("unknown command %q", args[0])
}

// helpRequest is a subcommand's -h: Run prints the command's usage on
// stdout and the exit status is 0.
type helpRequest struct{ fs *flag.FlagSet }

func (h *helpRequest) Error() string { return "dropship " + h.fs.Name() + " -h" }
func (h *helpRequest) Unwrap() error { return flag.ErrHelp }

func usage(w io.Writer) {
	fmt.Fprintf(w, "dropship %s: push files from drop folders to SSH/SFTP servers, with events on NATS\n\nUsage: dropship <command> [flags]\n\nCommands:\n", version)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'dropship <command> -h' for a command's flags.\nExit status: 0 ok, 1 runtime failure, 2 usage or configuration error.\n")
}

// newFlags returns a FlagSet for a subcommand that reports errors as usage
// errors instead of exiting. Its Usage writes to stderr (after a usage
// mistake); -h writes it to stdout (see parseFlags and Run).
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), strings.TrimSpace("Usage: dropship "+name+" "+synopsis))
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and turns flag errors into usage errors, reported
// once (by main), with a pointer to -h instead of the whole usage. -h
// returns a *helpRequest.
func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard) // the flag package would print the error and the usage itself
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return &helpRequest{fs}
	case err != nil:
		return usagef("%s: %v (see 'dropship %s -h')", fs.Name(), err, fs.Name())
	}
	return nil
}

func versionCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "dropship", version)
	return nil
}

// errInterrupted is returned by a command stopped by SIGINT or SIGTERM
// before it finished: exit status 1.
var errInterrupted = errors.New("interrupted by a signal before it finished")

// loadConfig loads and validates the config file, printing every problem.
func loadConfig(file string, stderr io.Writer) (*config.Config, error) {
	return loadConfigContext(context.Background(), file, stderr)
}

// loadConfigContext is loadConfig that returns errInterrupted as soon as ctx
// ends (a signal), even while the file system is slow to answer.
func loadConfigContext(ctx context.Context, file string, stderr io.Writer) (*config.Config, error) {
	type loaded struct {
		cfg *config.Config
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		cfg, err := config.Load(file)
		done <- loaded{cfg, err}
	}()
	var cfg *config.Config
	var err error
	select {
	case l := <-done:
		cfg, err = l.cfg, l.err
	case <-ctx.Done():
		return nil, errInterrupted
	}
	if err != nil {
		var problems config.Problems
		if errors.As(err, &problems) {
			for _, p := range problems {
				fmt.Fprintln(stderr, p)
			}
			fmt.Fprintf(stderr, "dropship: %s: %d problem(s)\n", file, len(problems))
			return nil, silentExit{code: 2}
		}
		// A missing or unreadable file is a configuration error too.
		hint := ""
		if errors.Is(err, fs.ErrNotExist) {
			hint = " (give the configuration with -c FILE; to try dropship without one: dropship run -dev)"
		}
		return nil, &usageError{fmt.Sprintf("%v%s", err, hint)}
	}
	return cfg, nil
}
