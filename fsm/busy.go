package fsm

import (
	"errors"
	"fmt"
	"strings"
)

// Busy reports whether a leaf in mode m holds its VM: a backup or a restore
// is under way on the VM's disks, state or definition. Finished leaves and
// retention's delete modes do not: a delete removes one old leaf's files and
// never touches the VM. This is the one definition of "busy": controld's
// backup start, its scheduler and restore start, and the node's restore
// steps all ask it.
func Busy(m Mode) bool {
	switch m {
	case Absent, Finished, Delete, Deleting, Deleted:
		return false
	}
	return true
}

// BusyValue is Busy for a raw sstProvisioningMode value. A value that is no
// mode counts as busy: nobody knows what is happening to that VM.
func BusyValue(v string) bool {
	m, err := ParseMode(v)
	return err != nil || Busy(m)
}

// ErrVMBusy is returned while another leaf of the VM is Busy.
var ErrVMBusy = errors.New("another leaf of this VM is being backed up or restored")

// ErrRestoreBusy is the name StartRestore's refusal had before Busy was the
// one rule; it is ErrVMBusy.
var ErrRestoreBusy = ErrVMBusy

// ErrBackupFailed is returned for a restore from a backup that failed: it
// holds nothing good to restore.
var ErrBackupFailed = errors.New("this backup failed: there is nothing good to restore")

// RestoreMayStart says whether a restore from self may start now, or go on
// with its next step: no other leaf of self's VM may be Busy (a backup and a
// restore, or two restores, would work on the same disks), and self's backup
// must not be known to have failed. others may hold self and leaves of other
// VMs; both are ignored. self's mode is not checked (the table does that):
// the node asks while it holds the claim of a restore step.
func RestoreMayStart(self Leaf, others []Leaf) error {
	var busy []string
	for _, o := range others {
		if o.Key != self.Key && o.VM == self.VM && Busy(o.Mode) {
			busy = append(busy, fmt.Sprintf("%s is %s", o.Name, o.Mode))
		}
	}
	if len(busy) > 0 {
		return fmt.Errorf("fsm: restore %s: leaf %s: %w", self.Key, strings.Join(busy, ", leaf "), ErrVMBusy)
	}
	if rc, ok := self.BackupOutcome(); ok && rc != 0 {
		return fmt.Errorf("fsm: restore %s: the backup ended with %d: %w", self.Key, rc, ErrBackupFailed)
	}
	return nil
}

// BackupMayStart says whether a new backup of a VM may start while the VM
// has vmLeaves: none of them may be Busy.
func BackupMayStart(vmLeaves []Leaf) error {
	for _, o := range vmLeaves {
		if Busy(o.Mode) {
			return fmt.Errorf("fsm: backup of %s: leaf %s is %s: %w", o.VM, o.Name, o.Mode, ErrVMBusy)
		}
	}
	return nil
}

// Restorable reports whether l is offered for a restore: finished, and its
// backup not known to have failed. A restore that failed, was refused or was
// cancelled leaves it restorable.
func Restorable(l Leaf) bool { return l.Mode == Finished && RestoreMayStart(l, nil) == nil }
