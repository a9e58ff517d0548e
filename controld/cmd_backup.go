package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

func init() {
	register("backup", "back up VMs now, as one batch", runBackup)
}

func runBackup(args []string) error {
	f := newFlags("backup", "usage: controld backup [flags] VM...")
	wait := f.Bool("wait", true, "follow the leaves until they are finished")
	timeout := f.Duration("timeout", 0, "give up following after this long (0: never)")
	if err := f.parse(args, 1, -1, "name at least one VM"); err != nil {
		return err
	}
	_, store, err := f.open()
	if err != nil {
		return err
	}
	defer store.Close()

	name, started := control.StartBackups(store, f.Args(), time.Now())
	var dns []string
	failed := 0
	for _, s := range started {
		if s.Err != nil {
			fmt.Fprintf(os.Stderr, "%s: not started: %v\n", s.VM, s.Err)
			failed++
			continue
		}
		fmt.Printf("%s: leaf %s created\n", s.VM, name)
		dns = append(dns, s.DN)
	}
	if !*wait || len(dns) == 0 {
		if failed > 0 {
			return fmt.Errorf("%d of %d backups not started", failed, len(started))
		}
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	results := map[string]ldapschema.Leaf{}
	err = control.Follow(ctx, store, dns, func(l ldapschema.Leaf) {
		fmt.Printf("%s %-36s %s %-14s rv=%d\n", time.Now().UTC().Format("15:04:05.000"), l.VM, l.Name, l.Mode, l.ReturnValue)
		results[l.VM] = l
	})
	if err != nil {
		return fmt.Errorf("following the backups: %w", err)
	}
	for _, l := range results {
		if l.ReturnValue != 0 {
			fmt.Fprintf(os.Stderr, "%s: failed with return code %d (%s)\n", l.VM, l.ReturnValue, ldapschema.ReturnCode(l.ReturnValue))
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d backups failed", failed, len(started))
	}
	return nil
}
