package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/stoneycloud/stoney-conductor/controld/recovery"
)

const recoverUsage = `usage: controld recover [flags] [PATH...]

Finds every backup on the backup storage and re-creates the directory
entries that are missing, so those backups can be listed and restored again:
after the directory was lost, or restored from an old dump.

Run it where the backup storage is mounted (a backup host or a node):
controld itself never reads backup files. It scans the backup roots of the
directory's backup configurations (global, pool and VM level) and every
PATH given (a backup root, holding vm-persistent/ and vm-templates/).

Nothing changes before you agree: recover lists what it found, what the
directory knows already and what stands in the way, lets you fix that and
validate again, then asks before it imports. Each VM is imported all or
nothing. Broken backups are reported and skipped.

  controld recover                      interactive, answers read from stdin
  controld recover --dry-run [--json]   validate only
  controld recover --yes [--recreate-vms] [--json]
                                        import without asking (scripts)
  controld recover --check [--json]     leaves whose files are gone or
                                        incomplete, and files no leaf knows;
                                        exit status 1 when anything is found

flags:`

func runRecover(args []string) error {
	return recoverCommand(context.Background(), args, recovery.Options{In: os.Stdin, Out: os.Stdout})
}

// recoverCommand runs recover with the In, Out, Images and Now of env, so
// tests can drive it in-process.
func recoverCommand(ctx context.Context, args []string, env recovery.Options) error {
	f, err := parseRecoverFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	_, store, err := f.open()
	if err != nil {
		return err
	}
	defer store.Close()
	o := f.options
	o.In, o.Out, o.Images, o.Now = env.In, env.Out, env.Images, env.Now
	err = recovery.Run(ctx, store, o)
	var de recovery.DirectoryError
	switch {
	case errors.Is(err, recovery.ErrNoRoot):
		return usageError{err}
	case errors.As(err, &de):
		return backendError{err}
	}
	return err
}

type recoverFlags struct {
	common
	options recovery.Options
}

func parseRecoverFlags(args []string, out io.Writer) (recoverFlags, error) {
	var f recoverFlags
	o := &f.options
	fs := flag.NewFlagSet("recover", flag.ContinueOnError)
	f.common.register(fs)
	fs.BoolVar(&o.DryRun, "dry-run", false, "validate and list, change nothing")
	fs.BoolVar(&o.Yes, "yes", false, "import without asking (for scripts); VMs with missing dependencies are skipped")
	fs.BoolVar(&o.JSON, "json", false, "write one JSON document instead of text (with --dry-run, --yes or --check)")
	fs.BoolVar(&o.Check, "check", false, "compare the other way: leaves whose files are gone or incomplete, files no leaf knows")
	fs.BoolVar(&o.RecreateVMs, "recreate-vms", false, "re-create missing VM entries (and their disks) from the LDIF saved with their newest backup")
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), recoverUsage)
		fs.PrintDefaults()
	}
	// Flags may follow paths: parse again after each one.
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return f, usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		p, err := filepath.Abs(fs.Arg(0))
		if err != nil {
			return f, usagef("%s: %v", fs.Arg(0), err)
		}
		o.Paths = append(o.Paths, p)
		rest = fs.Args()[1:]
	}
	switch {
	case o.Check && (o.Yes || o.DryRun || o.RecreateVMs):
		return f, usagef("--check changes nothing; it does not go with --yes, --dry-run or --recreate-vms")
	case o.Yes && o.DryRun:
		return f, usagef("--yes and --dry-run contradict each other")
	case o.JSON && !o.Yes && !o.DryRun && !o.Check:
		return f, usagef("--json does not ask questions: add --dry-run, --yes or --check")
	}
	return f, nil
}
