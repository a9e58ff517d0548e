package main

import (
	"bufio"
	"context"
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
	if _, err := control.StartRestore(store, vm, leaf, time.Now()); err != nil {
		return err
	}
	fmt.Printf("%s: fetching the XML and directory entries of backup %s\n", vm, leaf)
	l, err := followUntil(ctx, store, dn, "unretainedSmallFiles", "finished")
	if err != nil {
		return err
	}
	if l.Mode != "unretainedSmallFiles" || l.ReturnValue != 0 {
		return fmt.Errorf("fetching the small files failed with %d (%s)", l.ReturnValue, ldapschema.ReturnCode(l.ReturnValue))
	}
	e, err := store.Get(dn, "*")
	if err != nil {
		return err
	}
	fmt.Println("\nWhat the restore changes:")
	for _, d := range ldapschema.ParseRestoreDiff(e.GetAttributeValues(ldapschema.AttrDescription)) {
		fmt.Println("  " + d)
	}
	if !*yes {
		ok, err := confirm(os.Stdin, os.Stdout, fmt.Sprintf("\nReplace %s by its backup %s? The running VM is stopped; this cannot be undone [y/N] ", vm, leaf))
		if err != nil || !ok {
			if cerr := control.CancelRestore(store, dn, time.Now()); cerr != nil {
				return fmt.Errorf("cancelling: %w", cerr)
			}
			fmt.Println("cancelled; the VM is untouched")
			return err
		}
	}
	if err := control.ContinueRestore(store, dn); err != nil {
		return err
	}
	l, err = followUntil(ctx, store, dn, "finished")
	if err != nil {
		return err
	}
	if l.ReturnValue != 0 {
		return fmt.Errorf("restore failed with %d (%s)", l.ReturnValue, ldapschema.ReturnCode(l.ReturnValue))
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

// followUntil prints the leaf's mode changes until it reaches one of modes.
func followUntil(ctx context.Context, store *ldapschema.Store, dn string, modes ...string) (ldapschema.Leaf, error) {
	want := map[string]bool{}
	for _, m := range modes {
		want[m] = true
	}
	var last ldapschema.Leaf
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := store.Watch(fctx, ldapschema.WatchOptions{
		Base: dn, Filter: "(objectClass=" + ldapschema.ClassProvisioning + ")", Attrs: []string{"*"},
	}, func(ev ldapschema.Event) {
		if ev.Kind != ldapschema.EventPut {
			return
		}
		l, err := ldapschema.ParseLeaf(store.Tree, ev.Entry)
		if err != nil || l.Mode == last.Mode {
			return
		}
		last = l
		fmt.Printf("%s %s %-22s rv=%d\n", time.Now().UTC().Format("15:04:05.000"), l.Name, l.Mode, l.ReturnValue)
		if want[l.Mode] {
			cancel()
		}
	})
	if ctx.Err() != nil {
		return last, ctx.Err()
	}
	return last, err
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
