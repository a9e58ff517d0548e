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
	Failed bool // finished with a return value other than 0, or none
}

// Expired returns, oldest first, the leaves to delete so that a VM keeps n
// iterations (sstBackupNumberOfIterations):
//   - of the good backups (finished, return value 0), the n newest stay and
//     older ones go. Only good backups count towards n, so the newest good
//     backup is never deleted to make room while newer runs have failed;
//   - a failed leaf (finished, return value not 0) holds no usable backup but
//     shows the operator what went wrong: the n newest failed ones stay, as
//     long as they are newer than the oldest good backup kept. Older or more
//     failed leaves go, so nightly failures cannot pile up without end;
//   - a leaf in any other mode (being backed up, restored or deleted) is
//     neither counted nor deleted.
func Expired(leaves []RetentionLeaf, n int) []string {
	if n < 1 {
		return nil
	}
	var good, failed []string
	for _, l := range leaves {
		if l.Mode != fsm.Finished {
			continue
		}
		if l.Failed {
			failed = append(failed, l.Name)
		} else {
			good = append(good, l.Name)
		}
	}
	newestFirst := func(s []string) { sort.Sort(sort.Reverse(sort.StringSlice(s))) }
	newestFirst(good)
	newestFirst(failed)
	var out []string
	cutoff := ""
	if len(good) >= n {
		cutoff = good[n-1]
		out = append(out, good[n:]...)
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
		mode, err := fsm.ParseMode(e.GetAttributeValue(ldapschema.AttrMode))
		if err != nil {
			continue
		}
		rv := e.GetAttributeValue(ldapschema.AttrReturnValue)
		byName[ref.name] = ref
		leaves = append(leaves, RetentionLeaf{Name: ref.name, Mode: mode, Failed: rv == "" || atoiOr(rv, 1) != 0})
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
