package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

var restoreYes, restoreCancel bool

func runRestore(ctx context.Context, in *invocation) error {
	store := in.store
	vm := in.args[0]
	if len(in.args) == 1 {
		return listRestorable(os.Stdout, store, vm)
	}
	leaf := in.args[1]
	dn := store.Tree.Leaf(vm, leaf)
	if restoreCancel {
		if err := control.CancelRestore(store, dn, time.Now()); err != nil {
			return err
		}
		fmt.Printf("%s: restore from %s cancelled; the VM is untouched\n", vm, leaf)
		return nil
	}

	fmt.Printf("%s: fetching the XML and directory entries of backup %s\n", vm, leaf)
	var last string
	err := control.Restore(ctx, store, vm, leaf, control.RestoreSteps{
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
			if restoreYes {
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
