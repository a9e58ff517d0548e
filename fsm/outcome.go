package fsm

import "fmt"

// A leaf records two outcomes. sstProvisioningReturnValue is the backup's
// once the leaf is finished: the web UI, retention and the old tools read it
// so. While a restore runs, the node's answers carry the step's code there
// (the web UI checks it after unretainedSmallFiles), and the control side
// writes the backup's back when it closes the restore. So that it can, the
// backup's code is also kept in a record that restores never touch
// (Leaf.Backup), and the restore's own outcome goes to a record of its own
// (Leaf.LastRestore). ldapschema says where both records live.

// RestoreResult is how a restore ended.
type RestoreResult string

const (
	RestoreDone      RestoreResult = "done"
	RestoreFailed    RestoreResult = "failed" // refusals (22) included
	RestoreCancelled RestoreResult = "cancelled"
)

// RestoreOutcome is the record of a leaf's last restore.
type RestoreOutcome struct {
	Result RestoreResult
	Code   int    // the restore's return value, 0 for done and cancelled
	Step   Mode   // the request mode of the step that ended it
	At     string // stamp
}

func (o RestoreOutcome) String() string {
	return fmt.Sprintf("%s %d in %s at %s", o.Result, o.Code, o.Step, o.At)
}

// isRestoreStep reports whether m belongs to a restore's steps.
func (m Mode) isRestoreStep() bool {
	switch m.Request() {
	case UnretainSmallFiles, UnretainLargeFiles, Restore:
		return true
	}
	return false
}

// BackupOutcome returns the backup's own return value and whether it is
// known: from the record when there is one; else from ReturnValue while no
// restore has written it (a finished leaf, or the first restore step before
// the node's answer); else a restore that succeeded proves the backup good.
// Unknown are leaves still being backed up, and a leaf whose restore failed
// before any record existed: retention neither counts nor deletes those.
func (l Leaf) BackupOutcome() (rc int, known bool) {
	if l.Backup != nil {
		return *l.Backup, true
	}
	switch l.Mode {
	case Finished, UnretainSmallFiles, UnretainingSmallFiles:
		if l.LastRestore == nil {
			rc, _ := l.failed()
			return rc, true
		}
		if l.LastRestore.Result == RestoreDone {
			return 0, true
		}
	}
	return 0, false
}

// closeRestore ends a restore on l: finished, with the backup's return value
// back in place (when known) and the restore's outcome in its record.
func closeRestore(l Leaf, res RestoreResult, rc int, stamp, reason string) Write {
	w := Write{
		Key: l.Key, From: l.Mode, To: Finished, State: stamp,
		LastRestore: &RestoreOutcome{Result: res, Code: rc, Step: l.Mode.Request(), At: stamp},
		Reason:      reason,
	}
	if res == RestoreDone {
		w.Backup = intp(0) // restored from it: the backup was good
	}
	if b, ok := l.BackupOutcome(); ok {
		w.Backup = intp(b)
	}
	if w.Backup != nil {
		w.ReturnValue = intp(*w.Backup)
	}
	return w
}

// CancelRestore is the operator's "no" after the small files: the leaf goes
// back to finished with the backup's return value, the VM untouched.
func CancelRestore(l Leaf, stamp string) (Write, error) {
	if err := Check(Operator, l.Mode, Finished); err != nil {
		return Write{}, err
	}
	w := closeRestore(l, RestoreCancelled, 0, stamp, "restore cancelled by operator")
	return w, nil
}

// ContinueRestore is the operator's "yes" after the small files: allowed
// when they came back (return value 0) and RestoreMayStart still agrees.
func ContinueRestore(l Leaf, vmLeaves []Leaf, stamp string) (Write, error) {
	if rc, bad := l.failed(); bad {
		return Write{}, fmt.Errorf("fsm: restore %s: unretaining the small files failed with %d: cancel instead", l.Key, rc)
	}
	if err := RestoreMayStart(l, vmLeaves); err != nil {
		return Write{}, err
	}
	return Transition(Operator, l, UnretainLargeFiles, stamp)
}

// recordBackup returns the write that adds the backup record to a finished
// leaf that has none (a leaf from before the record, or from the seed's
// LDIF), so that a later restore cannot lose the backup's outcome.
func recordBackup(l Leaf) (Write, bool) {
	if l.Mode != Finished || l.Backup != nil {
		return Write{}, false
	}
	rc, ok := l.BackupOutcome()
	if !ok {
		return Write{}, false
	}
	return Write{Key: l.Key, From: Finished, To: Finished, Backup: intp(rc),
		Reason: "record the backup's outcome"}, true
}
