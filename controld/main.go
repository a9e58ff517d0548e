// Command controld is the control daemon of stoney conductor and its operator
// CLI: `controld agent` runs the daemon; the other subcommands act on the
// directory the daemon watches.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// command is one subcommand, declared: its flags and arguments, then run,
// which calls into a package. Parsing, the configuration, the directory and
// interrupts are handled here, the same way for all.
type command struct {
	name, summary, usage string
	// minArgs and maxArgs bound the arguments (maxArgs < 0: no limit);
	// argsWanted says what they are when the count is wrong (for a command
	// without arguments it goes without saying).
	minArgs, maxArgs int
	argsWanted       string
	// flags defines the command's own flags.
	flags func(*flag.FlagSet)
	// timeout adds -timeout: give up following after this long.
	timeout bool
	// json adds -json: print JSON (invocation.json) instead of text.
	json bool
	// run does the work; ctx ends on SIGINT or SIGTERM (or the timeout).
	run func(ctx context.Context, in *invocation) error
	// noStore: the command dials no directory with controld's account (the
	// web UI binds as each person).
	noStore bool
	// raw commands parse their own arguments (recover, which tests drive
	// in-process) and get none of the above.
	raw func(args []string) error
}

// invocation is what a command runs with.
type invocation struct {
	args  []string
	cfg   config
	store *ldapschema.Store
	json  bool
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

// printJSON writes v as the commands' -json output: indented, one document.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// invoke runs c on args.
func (c command) invoke(args []string) error {
	if c.raw != nil {
		return c.raw(args)
	}
	if c.usage == "" {
		c.usage = "usage: controld " + c.name + " [flags]"
	}
	if c.argsWanted == "" {
		c.argsWanted = c.name + " takes no arguments"
	}
	f := newFlags(c.name, c.usage)
	if c.flags != nil {
		c.flags(f.FlagSet)
	}
	var asJSON bool
	if c.json {
		f.BoolVar(&asJSON, "json", false, "print JSON instead of text")
	}
	var timeout *time.Duration
	if c.timeout {
		timeout = f.Duration("timeout", 0, "give up following after this long (0: never)")
	}
	if err := f.parse(args, c.minArgs, c.maxArgs, c.argsWanted); err != nil {
		return err
	}
	in := &invocation{args: f.Args(), json: asJSON}
	var err error
	if c.noStore {
		in.cfg, err = loadConfig(f.config)
	} else {
		in.cfg, in.store, err = f.open()
		if in.store != nil {
			defer in.store.Close()
		}
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if timeout != nil && *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	return c.run(ctx, in)
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
	err := cmd.invoke(os.Args[2:])
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
