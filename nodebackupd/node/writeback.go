package node

import (
	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// writeBack makes the VM's subtree in the directory what the saved LDIF says,
// by ldapschema.PlanSubtreeRestore's plan (in place, then added parents
// first, then deleted deepest first), read afresh: a re-run after a lost
// connection or a crash completes from whatever it finds. Every write is one
// operation of the step's seam.
func (a *Agent) writeBack(j *job, saved []*ldap.Entry) error {
	current, err := a.o.Store.SubtreeEntries(a.tree.VM(j.vm.Name))
	if err != nil {
		return err
	}
	plan, err := ldapschema.PlanSubtreeRestore(a.tree, j.vm.Name, saved, current)
	if err != nil {
		return err
	}
	for _, c := range plan.Modify {
		if err := j.seam.Do("ldap modify "+c.DN, func() error { return a.o.Store.Update(c.DN, "", c.Replace) }); err != nil {
			return err
		}
	}
	for _, e := range plan.Add {
		if err := j.seam.Do("ldap add "+e.DN, func() error { return a.o.Store.Add(ldapschema.AddRequestOf(e)) }); err != nil {
			return err
		}
	}
	for _, dn := range plan.Delete {
		if err := j.seam.Do("ldap delete "+dn, func() error { return a.o.Store.Delete(dn) }); err != nil {
			return err
		}
	}
	return nil
}
