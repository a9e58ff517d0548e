package control

import (
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
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

// modeChange translates w into one compare-and-swap modify; exec is the
// leaf's sstProvisioningExecutionTime as read, for the backup record to join.
func modeChange(w fsm.Write, exec []string) ldapschema.ModeChange {
	c := ldapschema.ModeChange{DN: w.Key, From: string(w.From), To: string(w.To), State: w.State, ReturnValue: w.ReturnValue}
	if w.Backup != nil {
		c.ExecutionTime = ldapschema.SetExecutionValue(exec, ldapschema.FormatBackupRecord(*w.Backup))
	}
	if o := w.LastRestore; o != nil {
		// Replaces the differences the node published: that restore is over.
		c.Extra = map[string][]string{ldapschema.AttrDescription: {ldapschema.FormatRestoreRecord(
			ldapschema.RestoreRecord{Result: string(o.Result), Code: o.Code, Step: string(o.Step), At: o.At})}}
	}
	return c
}
