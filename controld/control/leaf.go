package control

import (
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

func isLeaf(e *ldap.Entry) bool { return ldapschema.IsLeaf(e) }

// leafVM reads the VM and leaf name from a leaf DN, tolerating a malformed leaf
// name (see ldapschema.LeafOwner).
func leafVM(tree ldapschema.Tree, dn string) (vm, name string) {
	vm, name, _ = ldapschema.LeafOwner(tree, dn)
	return vm, name
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return def
	}
	return n
}
