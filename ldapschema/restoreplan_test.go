package ldapschema

import (
	"reflect"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

func TestPlanSubtreeRestore(t *testing.T) {
	vm := testTree.VM("kvm-005")
	disk := func(dev, path string) *ldap.Entry {
		return ldap.NewEntry("sstDisk="+dev+","+vm, map[string][]string{"objectClass": {ClassDisk}, "sstSourceFile": {path}})
	}
	saved := []*ldap.Entry{
		ldap.NewEntry(vm, map[string][]string{"objectClass": {ClassVirtualMachine}, AttrNode: {"old-node"}, "sstMemory": {"1024"}, "sstOld": {"x"}}),
		disk("vda", "/a/vda.qcow2"),
		disk("vdb", "/a/vdb.qcow2"),
		ldap.NewEntry("ou=child,sstDisk=vdb,"+vm, map[string][]string{"ou": {"child"}}),
		// The backup plan is never rewritten.
		ldap.NewEntry(testTree.VMBackup("kvm-005"), map[string][]string{"ou": {"backup"}, "sstBackupNumberOfIterations": {"9"}}),
	}
	current := []*ldap.Entry{
		ldap.NewEntry(vm, map[string][]string{"objectClass": {ClassVirtualMachine}, AttrNode: {"new-node"}, "sstMemory": {"2048"}}),
		disk("vda", "/a/vda.qcow2"),
		disk("vdc", "/a/vdc.qcow2"),
		ldap.NewEntry("ou=x,sstDisk=vdc,"+vm, map[string][]string{"ou": {"x"}}),
		ldap.NewEntry(testTree.VMBackup("kvm-005"), map[string][]string{"ou": {"backup"}, "sstBackupNumberOfIterations": {"3"}}),
	}
	p, err := PlanSubtreeRestore(testTree, "kvm-005", saved, current)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Modify) != 1 || p.Modify[0].DN != vm ||
		!reflect.DeepEqual(p.Modify[0].Replace, map[string][]string{"sstMemory": {"1024"}, "sstOld": {"x"}}) {
		t.Errorf("modify %+v: the node is kept, the rest set back", p.Modify)
	}
	var added []string
	for _, e := range p.Add {
		added = append(added, strings.SplitN(e.DN, ",", 2)[0])
	}
	if strings.Join(added, " ") != "sstDisk=vdb ou=child" {
		t.Errorf("add %v, want parents first", added)
	}
	var deleted []string
	for _, dn := range p.Delete {
		deleted = append(deleted, strings.SplitN(dn, ",", 2)[0])
	}
	if strings.Join(deleted, " ") != "ou=x sstDisk=vdc" {
		t.Errorf("delete %v, want deepest first", deleted)
	}
	want := []string{
		`VM sstMemory: backup "1024", now "2048"`,
		`VM sstNode: backup "old-node", now "new-node" (kept: the VM is restored on this host)`,
		`VM sstOld: backup "x", now ""`,
		`ou=child,sstDisk=vdb: removed since the backup; the restore re-creates it`,
		`ou=x,sstDisk=vdc: added since the backup; the restore removes it`,
		`sstDisk=vdb: removed since the backup; the restore re-creates it`,
		`sstDisk=vdc: added since the backup; the restore removes it`,
	}
	if !reflect.DeepEqual(p.Differences, want) {
		t.Errorf("differences:\n%s", strings.Join(p.Differences, "\n"))
	}

	// The same subtree: nothing to do, nothing to say.
	same, err := PlanSubtreeRestore(testTree, "kvm-005", current, current)
	if err != nil || len(same.Modify)+len(same.Add)+len(same.Delete)+len(same.Differences) != 0 {
		t.Errorf("same subtree: %+v %v", same, err)
	}
	// A saved LDIF without the VM, or reaching outside it, is refused.
	if _, err := PlanSubtreeRestore(testTree, "kvm-005", saved[1:], current); err == nil {
		t.Error("LDIF without the VM entry accepted")
	}
	out := append(saved, ldap.NewEntry(testTree.VM("other"), nil))
	if _, err := PlanSubtreeRestore(testTree, "kvm-005", out, current); err == nil {
		t.Error("LDIF reaching outside the VM accepted")
	}
}
