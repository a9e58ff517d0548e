package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

var backupWait bool

func runBackup(ctx context.Context, in *invocation) error {
	store := in.store

	name, started := control.StartBackups(store, in.args, time.Now())
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
	if !backupWait || len(dns) == 0 {
		if failed > 0 {
			return fmt.Errorf("%d of %d backups not started", failed, len(started))
		}
		return nil
	}
	results := map[string]ldapschema.Leaf{}
	err := control.Follow(ctx, store, dns, func(l ldapschema.Leaf) {
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
