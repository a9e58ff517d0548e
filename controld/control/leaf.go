package control

import (
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

func isLeaf(e *ldap.Entry) bool {
	for _, c := range e.GetAttributeValues(ldapschema.AttrObjectClass) {
		if strings.EqualFold(c, ldapschema.ClassProvisioning) {
			return true
		}
	}
	return false
}

// leafVM reads the VM and leaf name from a leaf DN, tolerating a malformed leaf
// name (the leaf still belongs to its VM and must be answered).
func leafVM(tree ldapschema.Tree, dn string) (vm, name string) {
	if vm, name, err := ldapschema.ParseLeafDN(tree, dn); err == nil {
		return vm, name
	}
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) < 3 {
		return "", ""
	}
	if a := parsed.RDNs[0].Attributes; len(a) == 1 {
		name = a[0].Value
	}
	if a := parsed.RDNs[2].Attributes; len(a) == 1 && strings.EqualFold(a[0].Type, ldapschema.AttrVirtualMachine) {
		vm = a[0].Value
	}
	return vm, name
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return def
	}
	return n
}
