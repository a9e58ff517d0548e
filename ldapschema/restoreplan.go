package ldapschema

import (
	"fmt"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// SubtreePlan is how a restore makes a VM's subtree in the directory what
// the saved LDIF says, in an order that never leaves it half-written and
// that a re-run (after a lost connection or a crash) completes from whatever
// it finds:
//  1. entries in both are modified in place (never deleted and re-added);
//  2. entries the backup had and the directory lacks are added, parents first;
//  3. entries the backup did not have are deleted last, deepest first.
//
// The VM's backup subtree (its plan and leaves) is never part of it: it is
// not part of the VM as it was. Neither are the attributes a restore keeps
// (KeptOnRestore): the VM stays on the host restoring it.
type SubtreePlan struct {
	Modify []EntryChange
	Add    []*ldap.Entry
	Delete []string
	// Differences describe the plan for the operator, one line each, sorted,
	// kept attributes included (marked so).
	Differences []string
}

// EntryChange replaces attributes of one entry (an empty list deletes one).
type EntryChange struct {
	DN      string
	Replace map[string][]string
}

// KeptOnRestore reports whether a restore keeps today's value of attribute
// name instead of the backup's.
func KeptOnRestore(name string) bool {
	return strings.EqualFold(name, AttrNode) || strings.EqualFold(name, AttrObjectClass)
}

// PlanSubtreeRestore compares saved (the backup's LDIF of vm) with current
// (the entries below the VM now). saved must hold the VM entry and nothing
// outside the VM.
func PlanSubtreeRestore(t Tree, vm string, saved, current []*ldap.Entry) (SubtreePlan, error) {
	vmDN := t.VM(vm)
	root := NormalizeDN(vmDN)
	backup := NormalizeDN(t.VMBackup(vm))
	below := func(n, top string) bool { return n == top || strings.HasSuffix(n, ","+top) }
	want := map[string]*ldap.Entry{}
	for _, e := range saved {
		n := NormalizeDN(e.DN)
		if !below(n, root) {
			return SubtreePlan{}, fmt.Errorf("saved LDIF holds %s, outside the VM", e.DN)
		}
		if !below(n, backup) {
			want[n] = e
		}
	}
	if _, ok := want[root]; !ok {
		return SubtreePlan{}, fmt.Errorf("saved LDIF lacks the VM entry %s", vmDN)
	}
	have := map[string]*ldap.Entry{}
	for _, e := range current {
		if n := NormalizeDN(e.DN); below(n, root) && !below(n, backup) && !IsLeaf(e) {
			have[n] = e
		}
	}
	rel := func(dn string) string {
		if NormalizeDN(dn) == root {
			return "VM"
		}
		return strings.TrimSuffix(dn, ","+vmDN)
	}
	depth := func(dn string) int { return strings.Count(NormalizeDN(dn), ",") }

	var p SubtreePlan
	for n, e := range want {
		cur, ok := have[n]
		if !ok {
			p.Add = append(p.Add, e)
			p.Differences = append(p.Differences, fmt.Sprintf("%s: removed since the backup; the restore re-creates it", rel(e.DN)))
			continue
		}
		rep := map[string][]string{}
		for _, name := range attrNames(e, cur) {
			was, now := e.GetAttributeValues(name), cur.GetAttributeValues(name)
			if sameValues(was, now) {
				continue
			}
			note := ""
			if KeptOnRestore(name) {
				note = " (kept: the VM is restored on this host)"
			} else {
				rep[name] = was
			}
			if !strings.EqualFold(name, AttrObjectClass) {
				p.Differences = append(p.Differences, fmt.Sprintf("%s %s: backup %q, now %q%s",
					rel(e.DN), name, strings.Join(was, ","), strings.Join(now, ","), note))
			}
		}
		if len(rep) > 0 {
			p.Modify = append(p.Modify, EntryChange{DN: cur.DN, Replace: rep})
		}
	}
	for n, e := range have {
		if _, ok := want[n]; !ok {
			p.Delete = append(p.Delete, e.DN)
			p.Differences = append(p.Differences, fmt.Sprintf("%s: added since the backup; the restore removes it", rel(e.DN)))
		}
	}
	sort.Slice(p.Modify, func(i, k int) bool { return p.Modify[i].DN < p.Modify[k].DN })
	sort.Slice(p.Add, func(i, k int) bool {
		if di, dk := depth(p.Add[i].DN), depth(p.Add[k].DN); di != dk {
			return di < dk
		}
		return p.Add[i].DN < p.Add[k].DN
	})
	sort.Slice(p.Delete, func(i, k int) bool {
		if di, dk := depth(p.Delete[i]), depth(p.Delete[k]); di != dk {
			return di > dk
		}
		return p.Delete[i] < p.Delete[k]
	})
	sort.Strings(p.Differences)
	return p, nil
}

// attrNames is the union of a's and b's attribute names, each once, sorted.
func attrNames(a, b *ldap.Entry) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range []*ldap.Entry{a, b} {
		for _, at := range e.Attributes {
			if !seen[at.Name] {
				seen[at.Name] = true
				out = append(out, at.Name)
			}
		}
	}
	sort.Strings(out)
	return out
}

// sameValues compares two value lists as sets with multiplicity.
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
