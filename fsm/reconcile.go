package fsm

import (
	"fmt"
	"time"
)

// Facts is what the control side knows of a batch besides its leaves. The
// caller gathers them (its clock, the node leases, the host's other batches);
// Reconcile decides from them alone.
type Facts struct {
	// Now is the caller's clock; stamps are FormatTime(Now).
	Now time.Time
	// Limits bound how long a leaf may wait on its node (see Deadline); nil
	// means no deadlines.
	Limits Limits
	// TimeoutCode is the return value of a leaf the control side gives up on.
	TimeoutCode int
	// HostGone says the batch's host stopped renewing its node lease: its
	// requests and claims fail at once instead of at their deadline.
	HostGone bool
	// Slots is how many more leaves of the batch's host may start a snapshot
	// (Options.MaxConcurrentPerHost less the leaves that HoldSlot); negative
	// means no cap.
	Slots int
}

// NoCap is Facts.Slots for a host without a cap.
const NoCap = -1

// HoldsSlot reports whether a leaf in mode m counts against its host's cap:
// from its snapshot request until it is retained. Initialized leaves beyond
// the cap wait for a slot.
func HoldsSlot(m Mode) bool {
	switch m {
	case Snapshot, Snapshotting, Snapshotted,
		Merge, Merging, Merged,
		Retain, Retaining, Retained:
		return true
	}
	return false
}

// Reconcile returns the control side's writes for one batch: the leaves with
// the same Name on VMs of the same Host (see Batches). It decides from what it
// is given alone, so calling it again on the same leaves and facts returns
// the same writes, and a missed or doubled event does no harm. Writes come in
// VM order.
//
// The batch is the unit because of the seed's plan: snapshot every VM of the
// batch at once so their downtimes lie close together, then merge and retain
// one VM at a time so the host's disks are not all copying at once.
func Reconcile(batch []Leaf, f Facts) []Write {
	stamp := FormatTime(f.Now)
	leaves := sortLeaves(batch)

	// Leaves that waited on their node too long, or whose node is gone, are
	// given up first: they neither block the batch nor get another write.
	var ws []Write
	given := map[string]bool{}
	for _, l := range leaves {
		if w, ok := giveUp(l, f); ok {
			ws = append(ws, w)
			given[l.Key] = true
		}
	}

	// Initialized leaves start their snapshot together once the whole batch
	// is initialized, as many as the host has slots for, in VM order. Those
	// that wait for a slot do not hold the batch's merges back: a slot frees
	// only when a leaf is retained.
	var initializing bool
	for _, l := range leaves {
		if l.Mode == Initialize {
			initializing = true
		}
	}
	admitted := map[string]bool{}
	slots := f.Slots
	for _, l := range leaves {
		if l.Mode != Initialized || given[l.Key] {
			continue
		}
		if initializing || slots < 0 {
			admitted[l.Key] = true
			continue
		}
		if slots > 0 {
			admitted[l.Key] = true
			slots--
		}
	}

	var snapshotting, busy bool
	for _, l := range leaves {
		if given[l.Key] {
			continue
		}
		switch l.Mode {
		case Initialize, Snapshot, Snapshotting:
			snapshotting = true
		case Initialized:
			if admitted[l.Key] {
				snapshotting = true
			}
		case Merge, Merging, Retain, Retaining:
			busy = true
		case Merged:
			// A failed merge is closed below and frees the slot at once.
			if _, bad := l.failed(); !bad {
				busy = true
			}
		}
	}

	for _, l := range leaves {
		if given[l.Key] {
			continue
		}
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
			if !initializing && admitted[l.Key] {
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
			// A request or a claim within its deadline: the node's turn.
		}
	}
	return ws
}

// giveUp is the control side ending a leaf that waits on a node that will
// not answer: past its deadline (Overdue), or on a host that is gone.
func giveUp(l Leaf, f Facts) (Write, bool) {
	if w, ok := Overdue(l, f.Now, l.Since, f.Limits, f.TimeoutCode); ok {
		w.Reason = "deadline: " + w.Reason
		if w.Note != "" {
			w.Note = w.Reason
		}
		return w, true
	}
	if f.HostGone && (l.Mode.IsRequest() || l.Mode.IsRunning()) {
		return Fail(l, f.TimeoutCode, FormatTime(f.Now),
			fmt.Sprintf("node %s stopped renewing its lease while the leaf was %s", l.Host, l.Mode)), true
	}
	return Write{}, false
}

// Wake returns when Reconcile must look at batch again by itself: the
// earliest deadline still ahead of its leaves waiting on their node. ok is
// false when nothing in it can time out; events bring every other change,
// the writes of this round included.
func Wake(batch []Leaf, f Facts) (at time.Time, ok bool) {
	if f.HostGone {
		return time.Time{}, false
	}
	for _, l := range batch {
		d, has := Deadline(l, l.Since, f.Limits)
		if has && d.After(f.Now) && (!ok || d.Before(at)) {
			at, ok = d, true
		}
	}
	return at, ok
}
