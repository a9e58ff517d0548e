package recovery

import (
	"fmt"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// operational attributes the server keeps itself and refuses in an add.
var operational = map[string]bool{
	"entryuuid": true, "entrycsn": true, "entrydn": true, "createtimestamp": true,
	"modifytimestamp": true, "creatorsname": true, "modifiersname": true,
	"structuralobjectclass": true, "subschemasubentry": true, "hassubordinates": true,
	"contextcsn": true, "numsubordinates": true,
}

// rebase copies the saved subtree onto this directory's tree (the LDIF
// may come from a directory with another base), parents first, without
// operational attributes.
func rebase(tree ldapschema.Tree, vm string, saved []*ldap.Entry) ([]*ldap.Entry, error) {
	var out []*ldap.Entry
	for _, e := range saved {
		rel, err := relativeToVM(e.DN, vm)
		if err != nil {
			return nil, err
		}
		parts := make([]string, 0, len(rel)+1)
		for _, r := range rel {
			var avas []string // spelled as saved (String() would lower-case the types)
			for _, a := range r.Attributes {
				avas = append(avas, a.Type+"="+ldap.EscapeDN(a.Value))
			}
			parts = append(parts, strings.Join(avas, "+"))
		}
		parts = append(parts, tree.VM(vm))
		c := &ldap.Entry{DN: strings.Join(parts, ",")}
		for _, a := range e.Attributes {
			if !operational[strings.ToLower(a.Name)] {
				c.Attributes = append(c.Attributes, ldap.NewEntryAttribute(a.Name, append([]string(nil), a.Values...)))
			}
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return depth(out[i].DN) < depth(out[j].DN) })
	return out, nil
}

func depth(dn string) int {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return strings.Count(dn, ",")
	}
	return len(parsed.RDNs)
}

func savedEntry(saved []*ldap.Entry, dn string) *ldap.Entry {
	n := ldapschema.NormalizeDN(dn)
	for _, e := range saved {
		if ldapschema.NormalizeDN(e.DN) == n {
			return e
		}
	}
	return nil
}

// savedVM reads the VM and its disks from the saved subtree.
func savedVM(tree ldapschema.Tree, saved []*ldap.Entry) (ldapschema.VM, []ldapschema.Disk) {
	var vm ldapschema.VM
	var disks []ldapschema.Disk
	for _, e := range saved {
		if v, err := ldapschema.ParseVM(tree, e); err == nil {
			vm = v
		} else if d, err := ldapschema.ParseDisk(tree, e); err == nil {
			disks = append(disks, d)
		}
	}
	return vm, disks
}

// relativeToVM returns the RDNs of dn above sstVirtualMachine=<vm>,ou=virtual
// machines (empty for the VM entry itself), whatever the base below.
func relativeToVM(dn, vm string) ([]*ldap.RelativeDN, error) {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return nil, fmt.Errorf("DN %q: %v", dn, err)
	}
	for i, rdn := range parsed.RDNs {
		if len(rdn.Attributes) != 1 || !strings.EqualFold(rdn.Attributes[0].Type, ldapschema.AttrVirtualMachine) {
			continue
		}
		next := parsed.RDNs[i+1:]
		if rdn.Attributes[0].Value != vm || len(next) == 0 || len(next[0].Attributes) != 1 ||
			!strings.EqualFold(next[0].Attributes[0].Type, ldapschema.AttrOU) ||
			!strings.EqualFold(next[0].Attributes[0].Value, "virtual machines") {
			break
		}
		return parsed.RDNs[:i], nil
	}
	return nil, fmt.Errorf("entry %q is not part of VM %s", dn, vm)
}
