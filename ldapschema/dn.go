package ldapschema

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"
)

// Tree builds and parses the DNs of the stoney cloud directory layout below
// Base (e.g. "o=stepping-stone,c=ch"). Values are escaped (RFC 4514), so a
// name never changes the shape of a DN.
type Tree struct {
	Base string
}

// Services is ou=services,<Base>.
func (t Tree) Services() string { return "ou=services," + t.Base }

// Virtualization is ou=virtualization,ou=services,<Base>.
func (t Tree) Virtualization() string { return "ou=virtualization," + t.Services() }

// VirtualMachines is the container of all VM entries.
func (t Tree) VirtualMachines() string { return "ou=virtual machines," + t.Virtualization() }

// Pools is the container of all VM pool entries.
func (t Tree) Pools() string { return "ou=virtual machine pools," + t.Virtualization() }

// Configuration is ou=configuration,ou=virtualization,ou=services,<Base>.
func (t Tree) Configuration() string { return "ou=configuration," + t.Virtualization() }

// GlobalBackup is the backup configuration used when neither the VM nor its
// pool carries one.
func (t Tree) GlobalBackup() string { return "ou=backup," + t.Configuration() }

// Containers lists, parents first, the entries between Base and the VM, pool
// and configuration entries. A new directory needs them (Base itself too).
func (t Tree) Containers() []string {
	return []string{t.Services(), t.Virtualization(), t.VirtualMachines(), t.Pools(), t.Configuration()}
}

// VM is the DN of the VM entry named vm.
func (t Tree) VM(vm string) string {
	return AttrVirtualMachine + "=" + ldap.EscapeDN(vm) + "," + t.VirtualMachines()
}

// VMBackup is the VM's ou=backup entry: its backup configuration (if it carries
// sstVirtualizationBackupObjectClass) and the parent of its backup leaves.
func (t Tree) VMBackup(vm string) string { return "ou=backup," + t.VM(vm) }

// Leaf is the DN of one backup of vm; leaf is its TimeLayout name.
func (t Tree) Leaf(vm, leaf string) string {
	return "ou=" + ldap.EscapeDN(leaf) + "," + t.VMBackup(vm)
}

// Pool is the DN of the VM pool entry named pool.
func (t Tree) Pool(pool string) string {
	return AttrVirtualMachinePool + "=" + ldap.EscapeDN(pool) + "," + t.Pools()
}

// PoolBackup is the backup configuration of a pool.
func (t Tree) PoolBackup(pool string) string { return "ou=backup," + t.Pool(pool) }

// Devices is the VM's ou=devices entry, the parent of its disks.
func (t Tree) Devices(vm string) string { return "ou=devices," + t.VM(vm) }

// Disk is the DN of the VM's disk with target name disk (vda, vdb ...), laid
// out as the original web UI and broker do: sstDisk=vda,ou=devices,<VM>.
func (t Tree) Disk(vm, disk string) string {
	return AttrDisk + "=" + ldap.EscapeDN(disk) + "," + t.Devices(vm)
}

// ParseLeafDN takes a backup leaf DN apart. It is strict: the DN must be exactly
// ou=<leaf>,ou=backup,sstVirtualMachine=<vm>,<VirtualMachines()> (attribute
// names and the suffix compared case-insensitively), leaf a valid TimeLayout
// time and vm a SafeName, because both end up in file paths.
func ParseLeafDN(t Tree, dn string) (vm, leaf string, err error) {
	vm, leaf, err = parseBelowVM(t, dn, AttrOU, "backup", "leaf")
	if err != nil {
		return "", "", err
	}
	if !IsLeafName(leaf) {
		return "", "", fmt.Errorf("%w: leaf %q: name %q is not of the form YYYYMMDDThhmmssZ", ErrMalformed, dn, leaf)
	}
	return vm, leaf, nil
}

// ParseVMDN returns the VM name of sstVirtualMachine=<vm>,<VirtualMachines()>,
// with the same strictness as ParseLeafDN.
func ParseVMDN(t Tree, dn string) (string, error) {
	rdns, err := relativeTo(t.VirtualMachines(), dn, 1)
	if err != nil {
		return "", err
	}
	return vmRDN(rdns[0], "VM", dn)
}

// ParseDiskDN returns the VM and disk target of sstDisk=<disk>,ou=devices,<VM>.
func ParseDiskDN(t Tree, dn string) (vm, disk string, err error) {
	return parseBelowVM(t, dn, AttrDisk, "devices", "disk")
}

// parseBelowVM takes apart <attr>=<value>,ou=<container>,<VM DN>; what names
// the entry in errors.
func parseBelowVM(t Tree, dn, attr, container, what string) (vm, value string, err error) {
	rdns, err := relativeTo(t.VirtualMachines(), dn, 3)
	if err != nil {
		return "", "", err
	}
	if value, err = rdnValue(rdns[0], attr); err != nil {
		return "", "", fmt.Errorf("%w: %s %q: %v", ErrMalformed, what, dn, err)
	}
	ou, err := rdnValue(rdns[1], AttrOU)
	if err != nil || !strings.EqualFold(ou, container) {
		return "", "", fmt.Errorf("%w: %q is not below an ou=%s entry", ErrMalformed, dn, container)
	}
	if vm, err = vmRDN(rdns[2], what, dn); err != nil {
		return "", "", err
	}
	return vm, value, nil
}

// vmRDN is the VM name of a DN's sstVirtualMachine RDN, a SafeName because
// it ends up in file paths.
func vmRDN(rdn *ldap.RelativeDN, what, dn string) (string, error) {
	vm, err := rdnValue(rdn, AttrVirtualMachine)
	if err != nil {
		return "", fmt.Errorf("%w: %s %q: %v", ErrMalformed, what, dn, err)
	}
	if err := SafeName(vm); err != nil {
		return "", fmt.Errorf("%w: %s %q: %w", ErrMalformed, what, dn, err)
	}
	return vm, nil
}

// relativeTo parses dn and returns its first n RDNs, provided the rest is
// exactly suffix.
func relativeTo(suffix, dn string, n int) ([]*ldap.RelativeDN, error) {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return nil, fmt.Errorf("%w: DN %q: %v", ErrMalformed, dn, err)
	}
	base, err := ldap.ParseDN(suffix)
	if err != nil {
		return nil, fmt.Errorf("%w: base DN %q: %v", ErrMalformed, suffix, err)
	}
	if len(parsed.RDNs) != n+len(base.RDNs) || !(&ldap.DN{RDNs: parsed.RDNs[n:]}).EqualFold(base) {
		return nil, fmt.Errorf("%w: DN %q is not %d level(s) below %q", ErrMalformed, dn, n, suffix)
	}
	return parsed.RDNs[:n], nil
}

// rdnValue returns the value of a single-valued RDN of attribute type attr.
func rdnValue(rdn *ldap.RelativeDN, attr string) (string, error) {
	if len(rdn.Attributes) != 1 {
		return "", errors.New("multi-valued RDN")
	}
	if !strings.EqualFold(rdn.Attributes[0].Type, attr) {
		return "", fmt.Errorf("RDN %s=%s is not %s=", rdn.Attributes[0].Type, rdn.Attributes[0].Value, attr)
	}
	return rdn.Attributes[0].Value, nil
}

// ErrUnsafeName: a VM, pool or disk file name that would escape or confuse the
// directory it is joined to.
var ErrUnsafeName = errors.New("unsafe name")

// SafeName refuses a VM, pool or disk file name that cannot be used as one path
// element: empty, "." or "..", containing "/" or NUL or other control
// characters, starting with "-" (would read as an option), not UTF-8 or longer
// than 255 bytes. '-' and '.' inside a name are fine (the original cut names at
// them, a bug).
func SafeName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrUnsafeName)
	case s == "." || s == "..":
		return fmt.Errorf("%w: %q", ErrUnsafeName, s)
	case strings.HasPrefix(s, "-"):
		return fmt.Errorf("%w: %q starts with '-'", ErrUnsafeName, s)
	case len(s) > 255:
		return fmt.Errorf("%w: %q is longer than 255 bytes", ErrUnsafeName, s)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %q is not UTF-8", ErrUnsafeName, s)
	}
	for _, r := range s {
		switch {
		case r == '/':
			return fmt.Errorf("%w: %q contains '/'", ErrUnsafeName, s)
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0:
			return fmt.Errorf("%w: %q contains control character %U", ErrUnsafeName, s, r)
		}
	}
	return nil
}
