package fsm

import (
	"errors"
	"testing"
	"time"
)

// TestOneBusyRule: every mode of a backup or a restore holds the VM, finished
// and the delete modes do not, and an unknown value counts as busy. The same
// rule answers a backup start and a restore start.
func TestOneBusyRule(t *testing.T) {
	free := map[Mode]bool{Finished: true, Delete: true, Deleting: true, Deleted: true}
	for _, m := range Modes() {
		if Busy(m) == free[m] || BusyValue(string(m)) != Busy(m) {
			t.Errorf("Busy(%s) = %v", m, Busy(m))
		}
		other := []Leaf{{Key: "o", VM: "v", Name: "o", Mode: m}}
		self := Leaf{Key: "s", VM: "v", Name: "s", Mode: Finished}
		if got := errors.Is(BackupMayStart(other), ErrVMBusy); got != Busy(m) {
			t.Errorf("BackupMayStart with a leaf in %s: busy=%v", m, got)
		}
		if got := errors.Is(RestoreMayStart(self, other), ErrVMBusy); got != Busy(m) {
			t.Errorf("RestoreMayStart with a leaf in %s: busy=%v", m, got)
		}
	}
	if !BusyValue("Snapshot") || !BusyValue("") {
		t.Error("a value that is no mode must count as busy")
	}
}

// TestRefusedRestoreKeepsBackupRestorable: whatever code a restore step
// answers, or however it times out or is cancelled, the leaf ends finished
// with the backup's return value and stays restorable.
func TestRefusedRestoreKeepsBackupRestorable(t *testing.T) {
	good := 0
	for _, m := range Modes() {
		if !m.isRestoreStep() {
			continue
		}
		l := Leaf{Key: "k", VM: "v", Name: "n", Mode: m, ReturnValue: 22, Backup: &good}
		var ws []Write
		switch {
		case m.IsDone():
			ws = Reconcile([]Leaf{l}, Facts{Now: mustTime("20121002T010000Z"), Slots: NoCap})
		default:
			if l.Mode.IsRequest() {
				l.State = Pending
			}
			w, ok := Overdue(l, mustTime("20121002T020000Z"), mustTime("20121002T010000Z"), Limits{m: 1}, 22)
			if ok {
				ws = []Write{w}
			}
		}
		if m == UnretainedSmallFiles {
			w, err := CancelRestore(Leaf{Key: "k", Mode: m, Backup: &good}, "20121002T010000Z")
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, w)
		}
		if len(ws) == 0 {
			t.Fatalf("%s: no write closes the restore", m)
		}
		for _, w := range ws {
			if w.To != Finished || w.ReturnValue == nil || *w.ReturnValue != 0 || w.LastRestore == nil {
				t.Errorf("%s: %v", m, w)
				continue
			}
			after := l
			after.Mode, after.ReturnValue, after.LastRestore = w.To, *w.ReturnValue, w.LastRestore
			if !Restorable(after) {
				t.Errorf("%s: after %v the backup is no longer restorable", m, w)
			}
			if rc, ok := after.BackupOutcome(); !ok || rc != 0 {
				t.Errorf("%s: after %v the backup reads %d known=%v", m, w, rc, ok)
			}
		}
	}
}

func mustTime(s string) time.Time {
	tm, err := ParseTime(s)
	if err != nil {
		panic(err)
	}
	return tm
}
