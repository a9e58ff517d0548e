package fsm

import "fmt"

// Reconcile returns the control side's writes for one batch: the leaves with
// the same Name on VMs of the same Host (see Batches). It decides from what it
// is given alone, so calling it again on the same leaves returns the same
// writes, and a missed or doubled event does no harm. Writes come in VM order.
//
// The batch is the unit because of the seed's plan: snapshot every VM of the
// batch at once so their downtimes lie close together, then merge and retain
// one VM at a time so the host's disks are not all copying at once.
func Reconcile(batch []Leaf, stamp string) []Write {
	leaves := sortLeaves(batch)

	var initializing, snapshotting, busy bool
	for _, l := range leaves {
		switch l.Mode {
		case Initialize:
			initializing, snapshotting = true, true
		case Initialized, Snapshot, Snapshotting:
			snapshotting = true
		case Merge, Merging, Retain, Retaining:
			busy = true
		case Merged:
			// A failed merge is closed below and frees the slot at once.
			if _, bad := l.failed(); !bad {
				busy = true
			}
		}
	}

	var ws []Write
	for _, l := range leaves {
		if rc, bad := l.failed(); l.Mode.IsDone() && bad {
			reason := fmt.Sprintf("%s failed with %d", l.Mode.Request(), rc)
			if l.Mode.isRestoreStep() {
				// A restore's failure is the restore's, never the backup's.
				ws = append(ws, closeRestore(l, RestoreFailed, rc, stamp, reason))
				continue
			}
			// Any failed answer ends the iteration for this VM only: a VM whose
			// snapshot failed is never merged or retained, the others go on.
			// A failed delete left part of the files: that backup is broken too.
			ws = append(ws, Write{
				Key: l.Key, From: l.Mode, To: Finished, State: stamp, ReturnValue: intp(rc),
				Backup: intp(rc), Reason: reason,
			})
			continue
		}
		switch l.Mode {
		case Initialize:
			ws = append(ws, Write{Key: l.Key, From: l.Mode, To: Initialized, State: stamp,
				Reason: "initialized"})
		case Initialized:
			// Hold until the whole batch is initialized, so all snapshots go out together.
			if !initializing {
				ws = append(ws, Write{Key: l.Key, From: l.Mode, To: Snapshot, State: Pending,
					Reason: "snapshot the whole batch together"})
			}
		case Snapshotted:
			if !snapshotting && !busy {
				busy = true // one merge per batch: the first VM in order
				ws = append(ws, Write{Key: l.Key, From: l.Mode, To: Merge, State: Pending,
					Reason: "all snapshots done, merge one VM at a time"})
			}
		case Merged:
			ws = append(ws, Write{Key: l.Key, From: l.Mode, To: Retain, State: Pending,
				Reason: "merged"})
		case Retained:
			ws = append(ws, Write{Key: l.Key, From: l.Mode, To: Finished, State: stamp, ReturnValue: intp(0),
				Backup: intp(0), Reason: "backup done"})
		case UnretainedSmallFiles:
			// The operator decides: unretainLargeFiles to go on, finished to cancel.
		case UnretainedLargeFiles:
			ws = append(ws, Write{Key: l.Key, From: l.Mode, To: Restore, State: Pending,
				Reason: "files unretained"})
		case Restored:
			ws = append(ws, closeRestore(l, RestoreDone, 0, stamp, "restore done"))
		case Finished:
			if w, ok := recordBackup(l); ok {
				ws = append(ws, w)
			}
		case Deleted:
			ws = append(ws, Write{Key: l.Key, From: l.Mode, To: Absent, Remove: true,
				Reason: "files deleted"})
		default:
			// A request or a claim: nothing to do until the node
			// answers. Deadlines are Overdue's business, which needs a clock.
		}
	}
	return ws
}
