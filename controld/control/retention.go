package control

import (
	"errors"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// retain applies retention (fsm.Expire) to one VM: each expired leaf is
// moved from finished to delete by compare-and-swap; the node removes its
// files and answers deleted, and fsm.Reconcile then removes the entry.
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
	var leaves []fsm.Leaf
	for _, ref := range c.idx.leafRefs(vm) {
		e, ok := c.cache.Get(ref.dn)
		if !ok || !ldapschema.IsLeafName(ref.name) {
			continue
		}
		if l, ok := c.leafOf(e, p.Host); ok {
			leaves = append(leaves, l)
		}
	}
	var retry error
	for _, w := range fsm.Expire(leaves, p.Iterations, fsm.FormatTime(c.o.Now())) {
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
