package control

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Leaves returns the VM's leaves, oldest first.
func Leaves(store *ldapschema.Store, vm string) ([]ldapschema.Leaf, error) {
	es, err := store.Search(store.Tree.VMBackup(vm), ldap.ScopeSingleLevel,
		"(objectClass="+ldapschema.ClassProvisioning+")", []string{"*"})
	if errors.Is(err, ldapschema.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []ldapschema.Leaf
	for _, e := range es {
		l, err := ldapschema.ParseLeaf(store.Tree, e)
		if err != nil {
			continue // a malformed leaf is nobody's backup
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Restorable is fsm.Restorable: finished, and the backup not known to have
// failed. A restore that failed, was refused or was cancelled keeps it so.
func Restorable(l ldapschema.Leaf) bool { return fsm.Restorable(l.FSM("")) }

// StartRestore asks the node for the small files of leaf: the web UI's first
// write, refused by fsm.RestoreMayStart while another leaf of the VM is busy.
func StartRestore(store *ldapschema.Store, vm, leaf string, now time.Time) (string, error) {
	leaves, err := Leaves(store, vm)
	if err != nil {
		return "", err
	}
	var target *ldapschema.Leaf
	var all []fsm.Leaf
	for i := range leaves {
		all = append(all, leaves[i].FSM(""))
		if leaves[i].Name == leaf {
			target = &leaves[i]
		}
	}
	if target == nil {
		return "", fmt.Errorf("%s has no backup %s", vm, leaf)
	}
	if target.Mode != string(fsm.Finished) {
		return "", fmt.Errorf("backup %s of %s is %s: only finished backups can be restored", leaf, vm, target.Mode)
	}
	w, err := fsm.StartRestore(target.FSM(""), all, fsm.FormatTime(now))
	if err != nil {
		return "", err
	}
	err = store.Write(w, target.ExecutionTime, nil)
	if errors.Is(err, ldapschema.ErrConflict) {
		return "", fmt.Errorf("backup %s of %s changed meanwhile; look again", leaf, vm)
	}
	return target.DN, err
}

// RestoreEnded says how the restore of l ended, once l is finished again:
// nil when done, else what the leaf's restore record says (the leaf's
// return value is its backup's again by then, see fsm.BackupOutcome).
func RestoreEnded(l ldapschema.Leaf) error {
	r := l.LastRestore
	switch {
	case r == nil:
		return fmt.Errorf("backup %s of %s is %s without a record of its restore", l.Name, l.VM, l.Mode)
	case r.Result == string(fsm.RestoreDone):
		return nil
	}
	return fmt.Errorf("restore %s", r)
}

// ErrRestoreCancelled is Restore's answer when the operator said no after
// seeing the differences: the VM is untouched.
var ErrRestoreCancelled = errors.New("restore cancelled; the VM is untouched")

// RestoreSteps are the operator's part of Restore.
type RestoreSteps struct {
	// Progress is told each change of the leaf (on the watch goroutine).
	Progress func(ldapschema.Leaf)
	// Decide sees the differences the node published between the backup
	// and today's VM and says whether to pass the point of no return; an
	// error or false cancels the restore.
	Decide func(diff []string) (bool, error)
	// Now stamps the operator's writes; time.Now if nil.
	Now func() time.Time
}

// Restore runs the web UI's sequence for backup leaf of vm to its end:
// unretainSmallFiles, the differences shown to Decide, then
// unretainLargeFiles (or finished to cancel), then it follows the leaf
// until the control side has closed the restore. It returns nil once the
// VM is restored, ErrRestoreCancelled, or why the restore failed.
func Restore(ctx context.Context, store *ldapschema.Store, vm, leaf string, s RestoreSteps) error {
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Progress == nil {
		s.Progress = func(ldapschema.Leaf) {}
	}
	dn, err := StartRestore(store, vm, leaf, s.Now())
	if err != nil {
		return err
	}
	until := func(modes ...fsm.Mode) (ldapschema.Leaf, error) {
		var last ldapschema.Leaf
		err := FollowUntil(ctx, store, []string{dn}, func(l ldapschema.Leaf) bool {
			return slices.Contains(modes, fsm.Mode(l.Mode))
		}, func(l ldapschema.Leaf) {
			last = l
			s.Progress(l)
		})
		return last, err
	}
	l, err := until(fsm.UnretainedSmallFiles, fsm.Finished)
	if err != nil {
		return err
	}
	if l.Mode != string(fsm.UnretainedSmallFiles) {
		return fmt.Errorf("fetching the small files: %w", RestoreEnded(l))
	}
	if l.ReturnValue != 0 {
		// The web UI's check of the node's answer: it failed, so cancel.
		if cerr := CancelRestore(store, dn, s.Now()); cerr != nil {
			return fmt.Errorf("cancelling: %w", cerr)
		}
		return fmt.Errorf("fetching the small files failed with %d (%s); the VM is untouched",
			l.ReturnValue, ldapschema.ReturnCode(l.ReturnValue))
	}
	e, err := store.Get(dn, ldapschema.AttrDescription)
	if err != nil {
		return err
	}
	ok, err := s.Decide(ldapschema.ParseRestoreDiff(e.GetAttributeValues(ldapschema.AttrDescription)))
	if err != nil || !ok {
		if cerr := CancelRestore(store, dn, s.Now()); cerr != nil {
			return fmt.Errorf("cancelling: %w", cerr)
		}
		if err != nil {
			return err
		}
		return ErrRestoreCancelled
	}
	if err := ContinueRestore(store, dn); err != nil {
		return err
	}
	if l, err = until(fsm.Finished); err != nil {
		return err
	}
	return RestoreEnded(l)
}

// ContinueRestore passes the point of no return: the node copies the large
// files, then the VM is replaced.
func ContinueRestore(store *ldapschema.Store, dn string) error {
	return decideRestore(store, dn, func(l fsm.Leaf, all []fsm.Leaf) (fsm.Write, error) {
		return fsm.ContinueRestore(l, all, fsm.Pending) // a request: no stamp
	})
}

// CancelRestore ends a restore waiting for the operator; the VM is untouched
// and the leaf is finished with its backup's return value.
func CancelRestore(store *ldapschema.Store, dn string, now time.Time) error {
	return decideRestore(store, dn, func(l fsm.Leaf, _ []fsm.Leaf) (fsm.Write, error) {
		return fsm.CancelRestore(l, fsm.FormatTime(now))
	})
}

func decideRestore(store *ldapschema.Store, dn string, decide func(fsm.Leaf, []fsm.Leaf) (fsm.Write, error)) error {
	l, err := store.GetLeaf(dn)
	if err != nil {
		return err
	}
	if l.Mode != string(fsm.UnretainedSmallFiles) {
		return fmt.Errorf("%s is %s, not waiting for a decision (%s)", dn, l.Mode, fsm.UnretainedSmallFiles)
	}
	leaves, err := Leaves(store, l.VM)
	if err != nil {
		return err
	}
	var all []fsm.Leaf
	for _, o := range leaves {
		all = append(all, o.FSM(""))
	}
	w, err := decide(l.FSM(""), all)
	if err != nil {
		return err
	}
	if err := w.Check(fsm.Operator); err != nil {
		return err
	}
	err = store.Write(w, l.ExecutionTime, nil)
	if errors.Is(err, ldapschema.ErrConflict) {
		return fmt.Errorf("%s changed meanwhile; look again", dn)
	}
	return err
}
