package node

import (
	"fmt"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// skipWriteBack: what a restore never rewrites — the backup plan and its leaves
// are not part of the VM as it was, and the VM stays on the host restoring it.
func (a *Agent) skipWriteBack(vm string, dn string) bool {
	n := ldapschema.NormalizeDN(dn)
	b := ldapschema.NormalizeDN(a.tree.VMBackup(vm))
	return n == b || strings.HasSuffix(n, ","+b)
}

var keepAttrs = map[string]bool{
	strings.ToLower(ldapschema.AttrNode):        true,
	strings.ToLower(ldapschema.AttrObjectClass): true,
}

// writeBack makes the VM's subtree in the directory what the saved LDIF says,
// in an order that never leaves it half-written and that a re-run (after a
// lost connection or a crash) completes from whatever it finds:
//  1. entries in both are modified in place (never deleted and re-added);
//  2. entries the backup had and the directory lacks are added, parents first;
//  3. entries the backup did not have are deleted last, deepest first.
//
// Every write is one operation of the step's seam.
func (a *Agent) writeBack(j *job, saved []*ldap.Entry) error {
	vm := j.vm
	root := ldapschema.NormalizeDN(a.tree.VM(vm.Name))
	want := map[string]*ldap.Entry{}
	for _, e := range saved {
		n := ldapschema.NormalizeDN(e.DN)
		if n != root && !strings.HasSuffix(n, ","+root) {
			return fmt.Errorf("saved LDIF holds %s, outside the VM", e.DN)
		}
		if a.skipWriteBack(vm.Name, e.DN) {
			continue
		}
		want[n] = e
	}
	if _, ok := want[root]; !ok {
		return fmt.Errorf("saved LDIF lacks the VM entry %s", a.tree.VM(vm.Name))
	}
	current, err := a.o.Store.SubtreeEntries(a.tree.VM(vm.Name))
	if err != nil {
		return err
	}
	have := map[string]*ldap.Entry{}
	for _, e := range current {
		if isLeaf(e) || a.skipWriteBack(vm.Name, e.DN) {
			continue
		}
		have[ldapschema.NormalizeDN(e.DN)] = e
	}
	depth := func(dn string) int { return strings.Count(ldapschema.NormalizeDN(dn), ",") }

	// 1. Set back in place.
	var both []*ldap.Entry
	for n, e := range want {
		if _, ok := have[n]; ok {
			both = append(both, e)
		}
	}
	sort.Slice(both, func(i, k int) bool { return both[i].DN < both[k].DN })
	for _, e := range both {
		cur := have[ldapschema.NormalizeDN(e.DN)]
		rep := attrChanges(cur, e)
		if len(rep) == 0 {
			continue
		}
		if err := j.seam.Do("ldap modify "+cur.DN, func() error { return a.o.Store.Update(cur.DN, "", rep) }); err != nil {
			return err
		}
	}
	// 2. Add what is missing, parents first.
	var add []*ldap.Entry
	for n, e := range want {
		if _, ok := have[n]; !ok {
			add = append(add, e)
		}
	}
	sort.Slice(add, func(i, k int) bool {
		if di, dk := depth(add[i].DN), depth(add[k].DN); di != dk {
			return di < dk
		}
		return add[i].DN < add[k].DN
	})
	for _, e := range add {
		if err := j.seam.Do("ldap add "+e.DN, func() error { return a.o.Store.Add(ldapschema.AddRequestOf(e)) }); err != nil {
			return err
		}
	}
	// 3. Remove what the VM did not have, deepest first.
	var gone []string
	for n, e := range have {
		if _, ok := want[n]; !ok {
			gone = append(gone, e.DN)
		}
	}
	sort.Slice(gone, func(i, k int) bool {
		if di, dk := depth(gone[i]), depth(gone[k]); di != dk {
			return di > dk
		}
		return gone[i] < gone[k]
	})
	for _, dn := range gone {
		if err := j.seam.Do("ldap delete "+dn, func() error { return a.o.Store.Delete(dn) }); err != nil {
			return err
		}
	}
	return nil
}

// attrChanges are the replacements that make cur what e says, except for
// the attributes a restore keeps.
func attrChanges(cur, e *ldap.Entry) map[string][]string {
	rep := map[string][]string{}
	for _, at := range e.Attributes {
		if keepAttrs[strings.ToLower(at.Name)] {
			continue
		}
		if !sameValues(cur.GetAttributeValues(at.Name), at.Values) {
			rep[at.Name] = at.Values
		}
	}
	for _, at := range cur.Attributes {
		if keepAttrs[strings.ToLower(at.Name)] {
			continue
		}
		if len(e.GetAttributeValues(at.Name)) == 0 {
			rep[at.Name] = nil
		}
	}
	return rep
}

func sameValues(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x := append([]string(nil), a...)
	y := append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}
