package fsm

import (
	"fmt"
	"sort"
)

// GoodBackup reports whether l holds a usable backup: finished or being
// restored, and its backup's outcome known to be 0. Retention counts these;
// the web UI's overview shows the newest.
func (l Leaf) GoodBackup() bool {
	rc, known := l.BackupOutcome()
	return known && rc == 0 && (l.Mode == Finished || l.Mode.isRestoreStep())
}

// Expired returns, oldest first, the leaves of one VM to delete so that it
// keeps n iterations (sstBackupNumberOfIterations):
//   - of the good backups (finished or being restored, BackupOutcome 0),
//     the n newest stay and older finished ones go. Only good backups count
//     towards n, so the newest good backup is never deleted to make room
//     while newer runs have failed; a refused, cancelled or failed restore
//     does not make a backup failed;
//   - a failed leaf (finished, its backup's outcome not 0) holds no usable
//     backup but shows the operator what went wrong: the n newest failed
//     ones stay, as long as they are newer than the oldest good backup kept.
//     Older or more failed leaves go, so nightly failures cannot pile up
//     without end;
//   - a leaf in any other mode (being backed up or deleted), or whose
//     backup's outcome is unknown, is neither counted nor deleted; one being
//     restored is never deleted.
func Expired(vmLeaves []Leaf, n int) []Leaf {
	if n < 1 {
		return nil
	}
	var good, failed []Leaf
	for _, l := range vmLeaves {
		rc, known := l.BackupOutcome()
		switch {
		case l.GoodBackup():
			good = append(good, l)
		case known && rc != 0 && l.Mode == Finished:
			failed = append(failed, l)
		}
	}
	newestFirst := func(ls []Leaf) {
		sort.SliceStable(ls, func(i, j int) bool { return ls[i].Name > ls[j].Name })
	}
	newestFirst(good)
	newestFirst(failed)
	var out []Leaf
	cutoff := ""
	if len(good) >= n {
		cutoff = good[n-1].Name
		for _, g := range good[n:] {
			if g.Mode == Finished {
				out = append(out, g)
			}
		}
	}
	for i, l := range failed {
		if i >= n || l.Name < cutoff {
			out = append(out, l)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Expire returns the writes that ask the node to delete a VM's expired
// leaves (finished → delete), oldest first. The node removes the files and
// answers deleted; Reconcile then removes the entry.
func Expire(vmLeaves []Leaf, n int, stamp string) []Write {
	var ws []Write
	for _, l := range Expired(vmLeaves, n) {
		w, err := Transition(Control, l, Delete, stamp)
		if err != nil {
			continue // Expired returns finished leaves only; the table agrees
		}
		w.Reason = fmt.Sprintf("retention keeps %d", n)
		ws = append(ws, w)
	}
	return ws
}
