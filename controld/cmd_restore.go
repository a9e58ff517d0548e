package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

func init() {
	register("restore", "restore a VM from one of its backups", runRestore)
}

func runRestore(args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	var c common
	c.register(fs)
	yes := fs.Bool("yes", false, "go past the point of no return without asking (for scripts)")
	cancel := fs.Bool("cancel", false, "cancel a restore of LEAF that waits for a decision")
	timeout := fs.Duration("timeout", 0, "give up following after this long (0: never)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: controld restore [flags] VM          list the VM's restorable backups
       controld restore [flags] VM LEAF     restore the VM from backup LEAF
       controld restore -cancel VM LEAF     cancel a restore that waits for a decision`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return usagef("name a VM, and a backup to restore")
	}
	_, store, err := c.open()
	if err != nil {
		return err
	}
	defer store.Close()
	vm := fs.Arg(0)
	if fs.NArg() == 1 {
		return listRestorable(os.Stdout, store, vm)
	}
	leaf := fs.Arg(1)
	dn := store.Tree.Leaf(vm, leaf)
	if *cancel {
		if err := control.CancelRestore(store, dn, time.Now()); err != nil {
			return err
		}
		fmt.Printf("%s: restore from %s cancelled; the VM is untouched\n", vm, leaf)
		return nil
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cf context.CancelFunc
		ctx, cf = context.WithTimeout(ctx, *timeout)
		defer cf()
	}
	fmt.Printf("%s: fetching the XML and directory entries of backup %s\n", vm, leaf)
	var last string
	err = control.Restore(ctx, store, vm, leaf, control.RestoreSteps{
		Progress: func(l ldapschema.Leaf) {
			if l.Mode != last {
				fmt.Printf("%s %s %-22s rv=%d\n", time.Now().UTC().Format("15:04:05.000"), l.Name, l.Mode, l.ReturnValue)
			}
			last = l.Mode
		},
		Decide: func(diff []string) (bool, error) {
			fmt.Println("\nWhat the restore changes:")
			for _, d := range diff {
				fmt.Println("  " + d)
			}
			if *yes {
				return true, nil
			}
			return confirm(os.Stdin, os.Stdout, fmt.Sprintf("\nReplace %s by its backup %s? The running VM is stopped; this cannot be undone [y/N] ", vm, leaf))
		},
	})
	if errors.Is(err, control.ErrRestoreCancelled) {
		fmt.Println("cancelled; the VM is untouched")
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Printf("%s restored from %s\n", vm, leaf)
	return nil
}

func listRestorable(w io.Writer, store *ldapschema.Store, vm string) error {
	leaves, err := control.Leaves(store, vm)
	if err != nil {
		return err
	}
	n := 0
	for _, l := range leaves {
		if control.Restorable(l) {
			fmt.Fprintf(w, "%s  %s\n", l.Name, strings.Join(l.ExecutionTime, ", "))
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("%s has no finished, successful backup", vm)
	}
	return nil
}

func confirm(in io.Reader, out io.Writer, question string) (bool, error) {
	fmt.Fprint(out, question)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && line == "" {
		return false, fmt.Errorf("no answer on standard input: %w (use -yes in scripts)", err)
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}
