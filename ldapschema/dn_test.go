package ldapschema

import (
	"errors"
	"strings"
	"testing"
)

var testTree = Tree{Base: "o=stepping-stone,c=ch"}

func TestTreeDNs(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{testTree.VirtualMachines(), "ou=virtual machines,ou=virtualization,ou=services,o=stepping-stone,c=ch"},
		{testTree.VM("kvm-005"), "sstVirtualMachine=kvm-005,ou=virtual machines,ou=virtualization,ou=services,o=stepping-stone,c=ch"},
		{testTree.VMBackup("kvm-005"), "ou=backup,sstVirtualMachine=kvm-005,ou=virtual machines,ou=virtualization,ou=services,o=stepping-stone,c=ch"},
		{testTree.Leaf("kvm-005", "20121002T010000Z"), "ou=20121002T010000Z,ou=backup,sstVirtualMachine=kvm-005,ou=virtual machines,ou=virtualization,ou=services,o=stepping-stone,c=ch"},
		{testTree.Pools(), "ou=virtual machine pools,ou=virtualization,ou=services,o=stepping-stone,c=ch"},
		{testTree.Pool("0f83f084"), "sstVirtualMachinePool=0f83f084,ou=virtual machine pools,ou=virtualization,ou=services,o=stepping-stone,c=ch"},
		{testTree.PoolBackup("0f83f084"), "ou=backup,sstVirtualMachinePool=0f83f084,ou=virtual machine pools,ou=virtualization,ou=services,o=stepping-stone,c=ch"},
		{testTree.GlobalBackup(), "ou=backup,ou=configuration,ou=virtualization,ou=services,o=stepping-stone,c=ch"},
		{testTree.Disk("kvm-005", "vda"), "sstDisk=vda,ou=devices,sstVirtualMachine=kvm-005,ou=virtual machines,ou=virtualization,ou=services,o=stepping-stone,c=ch"},
		// Values are escaped: a name cannot add RDNs.
		{testTree.VM("a,ou=x+b"), `sstVirtualMachine=a\,ou=x\+b,ou=virtual machines,ou=virtualization,ou=services,o=stepping-stone,c=ch`},
	} {
		if tc.got != tc.want {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
	c := testTree.Containers()
	if len(c) != 5 || c[0] != "ou=services,o=stepping-stone,c=ch" || c[4] != "ou=configuration,ou=virtualization,ou=services,o=stepping-stone,c=ch" {
		t.Errorf("Containers = %q", c)
	}
	for i := 1; i < len(c); i++ {
		if !strings.HasSuffix(c[i], ","+c[1]) && !strings.HasSuffix(c[i], ","+c[0]) {
			t.Errorf("container %q is not below an earlier one", c[i])
		}
	}
}

func TestParseLeafDN(t *testing.T) {
	vm, leaf, err := ParseLeafDN(testTree, testTree.Leaf("kvm-005", "20121002T010000Z"))
	if err != nil || vm != "kvm-005" || leaf != "20121002T010000Z" {
		t.Fatalf("ParseLeafDN = %q, %q, %v", vm, leaf, err)
	}
	// Attribute names, "backup" and the suffix compare case-insensitively;
	// blanks after commas are allowed.
	vm, leaf, err = ParseLeafDN(testTree, "OU=20121002T010000Z, OU=Backup, SSTVIRTUALMACHINE=b6dc3d27-5981.x, ou=Virtual Machines,ou=virtualization,ou=services,O=stepping-stone,C=CH")
	if err != nil || vm != "b6dc3d27-5981.x" || leaf != "20121002T010000Z" {
		t.Fatalf("ParseLeafDN (case) = %q, %q, %v", vm, leaf, err)
	}
	// An escaped comma stays part of the value (a comma is safe in a file name).
	vm, _, err = ParseLeafDN(testTree, testTree.Leaf("a,b", "20121002T010000Z"))
	if err != nil || vm != "a,b" {
		t.Fatalf("escaped VM name: %q, %v", vm, err)
	}

	bad := []string{
		"",
		"garbage",
		testTree.VMBackup("kvm-005"), // not a leaf
		"ou=x," + testTree.Leaf("kvm-005", "20121002T010000Z"),         // below a leaf
		testTree.Leaf("kvm-005", "2012"),                               // bad name
		testTree.Leaf("kvm-005", "20121002T010000Z+cn=x"),              // escaped: bad name
		"ou=20121002T010000Z+cn=x,ou=backup," + testTree.VM("kvm-005"), // multi-valued RDN
		"cn=20121002T010000Z,ou=backup," + testTree.VM("kvm-005"),      // not ou=
		"ou=20121002T010000Z,ou=backups," + testTree.VM("kvm-005"),     // not ou=backup
		"ou=20121002T010000Z,ou=backup," + testTree.Pool("p1"),         // a pool, not a VM
		"ou=20121002T010000Z,ou=backup,sstVirtualMachine=kvm-005,ou=virtual machines,ou=virtualization,ou=services,o=other,c=ch",
		"ou=20121002T010000Z,ou=backup,sstVirtualMachine=kvm-005,ou=x,ou=virtual machines,ou=virtualization,ou=services,o=stepping-stone,c=ch",
		testTree.Leaf("..", "20121002T010000Z"),
		testTree.Leaf("a/b", "20121002T010000Z"),
		testTree.Leaf("-rf", "20121002T010000Z"),
		testTree.Leaf("a\x00b", "20121002T010000Z"),
		`ou=20121002T010000Z,ou=backup,sstVirtualMachine=a\0ab,ou=virtual machines,ou=virtualization,ou=services,o=stepping-stone,c=ch`,
	}
	for _, dn := range bad {
		if vm, leaf, err := ParseLeafDN(testTree, dn); err == nil || !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseLeafDN(%q) = %q, %q, %v; want ErrMalformed", dn, vm, leaf, err)
		}
	}
	if _, _, err := ParseLeafDN(testTree, testTree.Leaf("../x", "20121002T010000Z")); !errors.Is(err, ErrUnsafeName) {
		t.Errorf("unsafe VM name: error %v does not wrap ErrUnsafeName", err)
	}
}

func TestParseVMAndDiskDN(t *testing.T) {
	vm, err := ParseVMDN(testTree, testTree.VM("kvm-005"))
	if err != nil || vm != "kvm-005" {
		t.Fatalf("ParseVMDN = %q, %v", vm, err)
	}
	for _, dn := range []string{testTree.VMBackup("kvm-005"), testTree.VM(""), testTree.VM("."), testTree.Pool("kvm-005"), testTree.VirtualMachines()} {
		if _, err := ParseVMDN(testTree, dn); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseVMDN(%q) error = %v, want ErrMalformed", dn, err)
		}
	}
	vm, disk, err := ParseDiskDN(testTree, testTree.Disk("kvm-005", "vdb"))
	if err != nil || vm != "kvm-005" || disk != "vdb" {
		t.Fatalf("ParseDiskDN = %q, %q, %v", vm, disk, err)
	}
	for _, dn := range []string{testTree.Devices("kvm-005"), "sstDisk=vda," + testTree.VM("kvm-005"), "sstDisk=vda,ou=devices," + testTree.VM("a/b")} {
		if _, _, err := ParseDiskDN(testTree, dn); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseDiskDN(%q) error = %v, want ErrMalformed", dn, err)
		}
	}
}

func TestSafeName(t *testing.T) {
	for _, ok := range []string{
		"kvm-005", "b6dc3d27-5981-4b18-8f3f-31ed3d21a3c6", "disk.qcow2", "a.b-c_d", "x..y", ".hidden", "é", "a b",
	} {
		if err := SafeName(ok); err != nil {
			t.Errorf("SafeName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{
		"", ".", "..", "a/b", "/", "../etc", "-rf", "-", "a\x00b", "a\nb", "\t", "a\x7fb", "a\u0085b", "\xff\xfe", strings.Repeat("x", 256),
	} {
		err := SafeName(bad)
		if !errors.Is(err, ErrUnsafeName) {
			t.Errorf("SafeName(%q) = %v, want ErrUnsafeName", bad, err)
		}
	}
}
