package ldap_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// The web UI's rules (stoney-conductor-webui-acl.ldif), applied after the
// daemons' on Debian's layout: a member of backup-operators backs up and
// restores, bound as themselves; changes no backup configuration nor VM;
// anyone else reads and is refused.
func TestWebUIOperators(t *testing.T) {
	operatorDN := "cn=web-operator," + base
	entries := fmt.Sprintf(`dn: %[1]s
objectClass: top
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: web-operator
userPassword: {CRYPT}*

dn: ou=groups,%[2]s
objectClass: organizationalUnit
ou: groups

dn: cn=backup-operators,ou=groups,%[2]s
objectClass: groupOfNames
cn: backup-operators
member: %[1]s
`, operatorDN, base)
	if code, out := tool(entries, "ldapadd", asAdmin()...); code != 0 {
		t.Fatalf("ldapadd exited %d: %s", code, out)
	}
	if err := setPassword(operatorDN); err != nil {
		t.Fatal(err)
	}
	vm := addVM(t, node1, true)
	op, other := bind(t, operatorDN), bind(t, webuiDN)

	_, started := control.StartBackups(other, []string{vm}, time.Now())
	refused(t, "someone outside the group backs up", started[0].Err)
	_, started = control.StartBackups(op, []string{vm}, time.Now())
	allowed(t, "an operator backs up", started[0].Err)
	leaf := started[0].DN
	allowed(t, "the leaf moves on", admin(t).Update(leaf, "", map[string][]string{
		ldapschema.AttrMode: {"finished"}, ldapschema.AttrState: {"20121002T010011Z"}, ldapschema.AttrReturnValue: {"0"},
	}))
	l, err := op.GetLeaf(leaf)
	if err != nil {
		t.Fatal(err)
	}
	_, err = control.StartRestore(op, vm, l.Name, time.Now())
	allowed(t, "an operator starts a restore", err)
	refused(t, "an operator changes the backup configuration", op.Update(env.tree.VMBackup(vm), "",
		map[string][]string{ldapschema.AttrBackupNumberOfIterations: {"9"}}))
	refused(t, "an operator changes the VM", op.Update(env.tree.VM(vm), "", map[string][]string{ldapschema.AttrMemory: {"1"}}))
	if _, err := other.Get(leaf, "*"); err != nil {
		t.Errorf("someone outside the group reads the leaf: %v", err)
	}
}
