// Command controld is the control daemon of stoney conductor and its operator
// CLI: `controld agent` runs the daemon; the other subcommands act on the
// directory the daemon watches.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
)

// command is one subcommand: it parses its own flags and calls into a package.
type command struct {
	summary string
	run     func(args []string) error
}

var commands = map[string]command{}

func register(name, summary string, run func([]string) error) {
	commands[name] = command{summary, run}
}

// Exit codes, one switch for all commands.
const (
	exitOK      = 0
	exitFailed  = 1 // the work ran and something failed
	exitUsage   = 2 // bad flags, arguments or configuration
	exitBackend = 3 // the directory could not be reached
)

// usageError marks errors in how a command was called.
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

type backendError struct{ error }

func (e backendError) Unwrap() error { return e.error }

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(exitUsage)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "controld: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(exitUsage)
	}
	err := cmd.run(os.Args[2:])
	var ue usageError
	var be backendError
	switch {
	case err == nil:
		os.Exit(exitOK)
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "controld %s: %v\n", os.Args[1], err)
		os.Exit(exitUsage)
	case errors.As(err, &be):
		fmt.Fprintf(os.Stderr, "controld %s: %v\n", os.Args[1], err)
		os.Exit(exitBackend)
	default:
		fmt.Fprintf(os.Stderr, "controld %s: %v\n", os.Args[1], err)
		os.Exit(exitFailed)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: controld <command> [flags] [args]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'controld <command> -h' for a command's flags.")
}
