package ldapschema

import (
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// IsLeaf reports whether e is a backup leaf (carries sstProvisioning).
func IsLeaf(e *ldap.Entry) bool {
	for _, c := range e.GetAttributeValues(AttrObjectClass) {
		if strings.EqualFold(c, ClassProvisioning) {
			return true
		}
	}
	return false
}

// LeafOwner returns the VM a leaf DN hangs under and the leaf's name, even when
// the name is malformed: such a leaf still belongs to its VM and must be
// answered with a code rather than ignored. ok is false unless dn is exactly
// ou=<name>,ou=backup,sstVirtualMachine=<vm>,<VirtualMachines()>.
func LeafOwner(t Tree, dn string) (vm, name string, ok bool) {
	if vm, name, err := ParseLeafDN(t, dn); err == nil {
		return vm, name, true
	}
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) < 3 {
		return "", "", false
	}
	first, third := parsed.RDNs[0].Attributes, parsed.RDNs[2].Attributes
	if len(first) != 1 || len(third) != 1 || !strings.EqualFold(third[0].Type, AttrVirtualMachine) {
		return "", "", false
	}
	vm, name = third[0].Value, first[0].Value
	if NormalizeDN(dn) != NormalizeDN("ou="+ldap.EscapeDN(name)+","+t.VMBackup(vm)) {
		return "", "", false
	}
	return vm, name, true
}
