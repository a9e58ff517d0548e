package control

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// RestorePrefix starts the description values in which the node publishes what
// a restore would change (after unretainSmallFiles).
const RestorePrefix = "restore: "

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

// Restorable: finished without error, the web UI's condition for its button.
func Restorable(l ldapschema.Leaf) bool { return l.Mode == string(fsm.Finished) && l.ReturnValue == 0 }

func fsmLeafOf(l ldapschema.Leaf) fsm.Leaf {
	m, _ := fsm.ParseMode(l.Mode)
	return fsm.Leaf{Key: l.DN, VM: l.VM, Name: l.Name, Mode: m, State: l.State, ReturnValue: l.ReturnValue}
}

// StartRestore asks the node for the small files of leaf: the web UI's first
// write, refused while another leaf of the VM is restoring.
func StartRestore(store *ldapschema.Store, vm, leaf string, now time.Time) (string, error) {
	leaves, err := Leaves(store, vm)
	if err != nil {
		return "", err
	}
	var target *ldapschema.Leaf
	var all []fsm.Leaf
	for i := range leaves {
		all = append(all, fsmLeafOf(leaves[i]))
		if leaves[i].Name == leaf {
			target = &leaves[i]
		}
	}
	if target == nil {
		return "", fmt.Errorf("%s has no backup %s", vm, leaf)
	}
	if !Restorable(*target) {
		return "", fmt.Errorf("backup %s of %s is %s with return value %d: only finished, successful backups can be restored",
			leaf, vm, target.Mode, target.ReturnValue)
	}
	w, err := fsm.StartRestore(fsmLeafOf(*target), all, ldapschema.FormatTime(now))
	if err != nil {
		return "", err
	}
	err = store.ChangeMode(ldapschema.ModeChange{DN: target.DN, From: string(w.From), To: string(w.To), State: ldapschema.StatePending})
	if errors.Is(err, ldapschema.ErrConflict) {
		return "", fmt.Errorf("backup %s of %s changed meanwhile; look again", leaf, vm)
	}
	return target.DN, err
}

// RestoreDiff returns what the node found different between the backup and
// today's VM, as it published it on the leaf.
func RestoreDiff(l ldapschema.Leaf, e *ldap.Entry) []string {
	var out []string
	for _, v := range e.GetAttributeValues(ldapschema.AttrDescription) {
		if strings.HasPrefix(v, RestorePrefix) {
			out = append(out, strings.TrimPrefix(v, RestorePrefix))
		}
	}
	return out
}

// ContinueRestore passes the point of no return: the node copies the large
// files, then the VM is replaced.
func ContinueRestore(store *ldapschema.Store, dn string) error {
	return decideRestore(store, dn, fsm.UnretainLargeFiles, ldapschema.StatePending)
}

// CancelRestore ends a restore waiting for the operator; the VM is untouched.
func CancelRestore(store *ldapschema.Store, dn string, now time.Time) error {
	return decideRestore(store, dn, fsm.Finished, ldapschema.FormatTime(now))
}

func decideRestore(store *ldapschema.Store, dn string, to fsm.Mode, state string) error {
	e, err := store.Get(dn, "*")
	if err != nil {
		return err
	}
	l, err := ldapschema.ParseLeaf(store.Tree, e)
	if err != nil {
		return err
	}
	if l.Mode != string(fsm.UnretainedSmallFiles) {
		return fmt.Errorf("%s is %s, not waiting for a decision (%s)", dn, l.Mode, fsm.UnretainedSmallFiles)
	}
	if to == fsm.UnretainLargeFiles && l.ReturnValue != 0 {
		return fmt.Errorf("unretaining the small files failed with %d (%s): cancel instead",
			l.ReturnValue, ldapschema.ReturnCode(l.ReturnValue))
	}
	if err := fsm.Check(fsm.Operator, fsm.UnretainedSmallFiles, to); err != nil {
		return err
	}
	err = store.ChangeMode(ldapschema.ModeChange{DN: dn, From: l.Mode, To: string(to), State: state})
	if errors.Is(err, ldapschema.ErrConflict) {
		return fmt.Errorf("%s changed meanwhile; look again", dn)
	}
	return err
}
