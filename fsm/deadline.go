package fsm

import (
	"fmt"
	"time"
)

// Limits says how long a leaf may stay in a request or running mode before the
// control side gives up on it. A mode missing from the map never times out.
type Limits map[Mode]time.Duration

// Deadline returns when l, in its mode since since, is overdue. ok is false
// when its mode has no limit: only requests and claims wait on the node.
// since is when the mode was written (the entry's modifyTimestamp), not the
// leaf's State, which a request holds at Pending.
func Deadline(l Leaf, since time.Time, limits Limits) (at time.Time, ok bool) {
	if !l.Mode.IsRequest() && !l.Mode.IsRunning() {
		return time.Time{}, false
	}
	d, ok := limits[l.Mode]
	if !ok || d <= 0 {
		return time.Time{}, false
	}
	return since.Add(d), true
}

// Overdue returns the write that gives up on l once now is past its Deadline:
// finished, with State now and ReturnValue rc. It exists because the original
// waited forever, and a node that died mid-step blocked the VM's backups and,
// through the merge rule, the rest of its batch. An overdue restore step
// fails the restore, not the backup (see closeRestore).
func Overdue(l Leaf, now, since time.Time, limits Limits, rc int) (Write, bool) {
	at, ok := Deadline(l, since, limits)
	if !ok || !now.After(at) {
		return Write{}, false
	}
	reason := fmt.Sprintf("%s for %s, over its limit of %s", l.Mode, now.Sub(since), limits[l.Mode])
	return Fail(l, rc, FormatTime(now), reason), true
}

// Fail is the control side ending a leaf that cannot go on (a deadline, a
// host that stopped renewing its lease): a backup fails with rc and the
// reason as its Note (the node left no word of its own); a restore step
// records its failure and leaves the backup's own outcome as it was.
func Fail(l Leaf, rc int, stamp, reason string) Write {
	if l.Mode.isRestoreStep() {
		return closeRestore(l, RestoreFailed, rc, stamp, reason)
	}
	return Write{
		Key: l.Key, From: l.Mode, To: Finished, State: stamp, ReturnValue: intp(rc),
		Backup: intp(rc), Reason: reason, Note: reason,
	}
}
