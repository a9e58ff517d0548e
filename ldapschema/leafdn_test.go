package ldapschema

import "testing"

func TestLeafOwner(t *testing.T) {
	tr := Tree{Base: "o=stepping-stone,c=ch"}
	for _, tc := range []struct {
		dn, vm, name string
		ok           bool
	}{
		{tr.Leaf("vm-1", "20240101T000000Z"), "vm-1", "20240101T000000Z", true},
		{"ou=yesterday," + tr.VMBackup("vm-1"), "vm-1", "yesterday", true}, // malformed name, known owner
		{"ou=x,ou=other," + tr.VM("vm-1"), "", "", false},
		{"ou=x,ou=backup,sstVirtualMachine=vm-1,ou=elsewhere,o=x", "", "", false},
		{"not a dn", "", "", false},
	} {
		vm, name, ok := LeafOwner(tr, tc.dn)
		if vm != tc.vm || name != tc.name || ok != tc.ok {
			t.Errorf("LeafOwner(%q) = %q %q %v, want %q %q %v", tc.dn, vm, name, ok, tc.vm, tc.name, tc.ok)
		}
	}
}
