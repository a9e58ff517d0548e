package control

import (
	"errors"
	"fmt"
	"sort"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// RetentionLeaf is what retention needs to know of one leaf.
type RetentionLeaf struct {
	Name   string // the leaf's ou, its planned UTC time
	Mode   fsm.Mode
	Failed bool // the backup ended with a return value other than 0, or none
	// Unknown: nothing says how the backup ended (a leaf still being backed
	// up, or one whose restore failed before leaves kept a backup record).
	Unknown bool
}

// retentionLeaf reads l's backup outcome by fsm's rule, never the return
// value alone: a restore's failure is not the backup's.
func retentionLeaf(l fsm.Leaf) RetentionLeaf {
	rc, known := l.BackupOutcome()
	return RetentionLeaf{Name: l.Name, Mode: l.Mode, Failed: known && rc != 0, Unknown: !known}
}

// Expired returns, oldest first, the leaves to delete so that a VM keeps n
// iterations (sstBackupNumberOfIterations):
//   - of the good backups (finished or being restored, the backup's return
//     value 0), the n newest stay and older finished ones go. Only good
//     backups count towards n, so the newest good backup is never deleted to
//     make room while newer runs have failed; a refused, cancelled or failed
//     restore does not make a backup failed;
//   - a failed leaf (finished, the backup's return value not 0) holds no
//     usable backup but shows the operator what went wrong: the n newest
//     failed ones stay, as long as they are newer than the oldest good backup
//     kept. Older or more failed leaves go, so nightly failures cannot pile
//     up without end;
//   - a leaf in any other mode (being backed up or deleted), or whose
//     backup's outcome is Unknown, is neither counted nor deleted; one being
//     restored is never deleted.
func Expired(leaves []RetentionLeaf, n int) []string {
	if n < 1 {
		return nil
	}
	type goodLeaf struct {
		name      string
		deletable bool
	}
	var good []goodLeaf
	var failed []string
	for _, l := range leaves {
		finished := l.Mode == fsm.Finished
		if l.Unknown || (!finished && !l.Mode.IsRestore()) {
			continue
		}
		switch {
		case !l.Failed:
			good = append(good, goodLeaf{l.Name, finished})
		case finished:
			failed = append(failed, l.Name)
		}
	}
	sort.Slice(good, func(i, j int) bool { return good[i].name > good[j].name })
	sort.Sort(sort.Reverse(sort.StringSlice(failed)))
	var out []string
	cutoff := ""
	if len(good) >= n {
		cutoff = good[n-1].name
		for _, g := range good[n:] {
			if g.deletable {
				out = append(out, g.name)
			}
		}
	}
	for i, name := range failed {
		if i >= n || name < cutoff {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// retain applies retention to one VM: each expired leaf is moved from
// finished to delete by compare-and-swap; the node removes its files and
// answers deleted, and fsm.Reconcile then removes the entry.
//
// Excluded VMs are left alone: excluding a VM stops new backups, and the ones
// it has stay listed and restorable until it is included again. A VM without
// a readable configuration is left alone too (its number of iterations is
// unknown).
func (c *Controller) retain(vm string) error {
	if c.sched == nil {
		return nil
	}
	p, ok := c.sched.plan(vm)
	if !ok || p.Iterations < 1 || p.Status == PlanExcluded {
		return nil
	}
	refs := c.idx.leafRefs(vm)
	byName := make(map[string]leafRef, len(refs))
	leaves := make([]RetentionLeaf, 0, len(refs))
	for _, ref := range refs {
		e, ok := c.cache.Get(ref.dn)
		if !ok || !ldapschema.IsLeafName(ref.name) {
			continue
		}
		l, ok := c.fsmLeaf(e, batchKey(p.Host, ref.name))
		if !ok {
			continue
		}
		byName[ref.name] = ref
		leaves = append(leaves, retentionLeaf(l))
	}
	stamp := ldapschema.FormatTime(c.o.Now())
	var retry error
	for _, name := range Expired(leaves, p.Iterations) {
		ref := byName[name]
		w, err := fsm.Transition(fsm.Control, fsm.Leaf{Key: ref.dn, VM: vm, Name: name, Host: p.Host, Mode: fsm.Finished}, fsm.Delete, stamp)
		if err != nil {
			return err
		}
		w.Reason = fmt.Sprintf("retention keeps %d", p.Iterations)
		switch err := c.apply(w); {
		case err == nil:
			c.sched.deletes.Add(1)
		case errors.Is(err, ldapschema.ErrConflict), errors.Is(err, ldapschema.ErrNotFound):
			// Changed under us (a restore started, an operator); the watch brings it back.
		default:
			retry = err
		}
	}
	return retry
}
