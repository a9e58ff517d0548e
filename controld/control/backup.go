package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Started is the outcome of asking for one VM's backup.
type Started struct {
	VM  string
	DN  string // the new leaf, when Err is nil
	Err error
}

// ErrBusy: the VM has a leaf that is busy (fsm.Busy).
var ErrBusy = fsm.ErrVMBusy

// ErrUnknownVM: the directory has no such VM.
var ErrUnknownVM = errors.New("no such VM in the directory")

// StartBackups creates, for each VM, a leaf named after now (UTC) in mode
// initialize, as the seed's Step 01. All get the same name, so the VMs of one
// host form one batch: all snapshotted first, then merged and retained in turn.
func StartBackups(store *ldapschema.Store, vms []string, now time.Time) (string, []Started) {
	name := fsm.FormatTime(now)
	out := make([]Started, 0, len(vms))
	for _, vm := range vms {
		dn, err := startBackup(store, vm, name)
		out = append(out, Started{VM: vm, DN: dn, Err: err})
	}
	return name, out
}

func startBackup(store *ldapschema.Store, vm, name string) (string, error) {
	tree := store.Tree
	if err := ldapschema.SafeName(vm); err != nil {
		return "", fmt.Errorf("VM name %q: %w", vm, err)
	}
	if _, err := store.Get(tree.VM(vm), "1.1"); err != nil {
		if errors.Is(err, ldapschema.ErrNotFound) {
			return "", fmt.Errorf("%s: %w", vm, ErrUnknownVM)
		}
		return "", err
	}
	if active, err := ActiveLeaf(store, vm); err != nil {
		return "", err
	} else if active != "" {
		return "", fmt.Errorf("%s: %w (%s)", vm, ErrBusy, active)
	}
	w, err := fsm.Transition(fsm.Operator, fsm.Leaf{Key: tree.Leaf(vm, name), VM: vm, Name: name}, fsm.Initialize, name)
	if err != nil {
		return "", err
	}
	if err := store.Write(w, nil, nil); err != nil {
		if errors.Is(err, ldapschema.ErrConflict) {
			return "", fmt.Errorf("%s: a leaf %s exists already", vm, name)
		}
		return "", err
	}
	return w.Key, nil
}

// ActiveLeaf returns the DN of a leaf of vm that holds the VM (fsm.Busy), or "".
func ActiveLeaf(store *ldapschema.Store, vm string) (string, error) {
	es, err := store.Search(store.Tree.VMBackup(vm), ldap.ScopeSingleLevel,
		"(objectClass="+ldapschema.ClassProvisioning+")", []string{ldapschema.AttrMode})
	if errors.Is(err, ldapschema.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, e := range es {
		if fsm.BusyValue(e.GetAttributeValue(ldapschema.AttrMode)) {
			return e.DN, nil
		}
	}
	return "", nil
}

// Follow reports every change of the given leaves until each is finished (or
// gone), or ctx is done. fn runs on the watch goroutine.
func Follow(ctx context.Context, store *ldapschema.Store, dns []string, fn func(ldapschema.Leaf)) error {
	return FollowUntil(ctx, store, dns, func(l ldapschema.Leaf) bool { return l.Mode == string(fsm.Finished) }, fn)
}

// FollowUntil is Follow until done says a leaf got where its reader waits.
func FollowUntil(ctx context.Context, store *ldapschema.Store, dns []string, done func(ldapschema.Leaf) bool, fn func(ldapschema.Leaf)) error {
	want := map[string]bool{}
	for _, dn := range dns {
		want[ldapschema.NormalizeDN(dn)] = true
	}
	left := len(want)
	if left == 0 {
		return nil
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	last := map[string]string{}
	err := store.Watch(fctx, ldapschema.WatchOptions{
		Base:   store.Tree.VirtualMachines(),
		Filter: "(objectClass=" + ldapschema.ClassProvisioning + ")",
		Attrs:  []string{"*"},
	}, func(ev ldapschema.Event) {
		n := ldapschema.NormalizeDN(ev.DN)
		if !want[n] {
			return
		}
		switch ev.Kind {
		case ldapschema.EventDelete:
			delete(want, n)
		case ldapschema.EventPut:
			l, err := ldapschema.ParseLeaf(store.Tree, ev.Entry)
			if err != nil {
				return
			}
			sig := l.Mode + "/" + l.State
			if last[n] != sig {
				last[n] = sig
				fn(l)
			}
			if done(l) {
				delete(want, n)
			}
		}
		if len(want) == 0 {
			cancel()
		}
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
