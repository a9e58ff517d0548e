package ldapschema

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
)

// Sentinels for what is wrong with directory content. Callers map them to
// return codes (ErrNoConfig → RCNoConfig, ErrUnsupportedProtocol →
// RCUnsupportedProtocol) and treat all of them as permanent: retrying does not
// fix an entry.
var (
	// ErrMalformed: an entry or value does not have the form the schema and
	// layout require.
	ErrMalformed = errors.New("malformed directory entry")
	// ErrNoConfig: none of VM, pool and global carries a backup configuration.
	ErrNoConfig = errors.New("cannot find configuration entry")
	// ErrUnsupportedProtocol: a backup location is not a local file:// path.
	ErrUnsupportedProtocol = errors.New("unsupported file transfer protocol")
)

// Leaf is one backup of a VM: ou=<Name>,ou=backup,<VM>, with the class
// sstProvisioning that carries the hand-over between control and node.
type Leaf struct {
	DN   string
	VM   string // sstVirtualMachine of the VM above, a SafeName
	Name string // the ou, a TimeLayout time (when the backup was planned)

	Mode          string // sstProvisioningMode
	State         string // fsm.Pending or a TimeLayout time
	ExecutionDate int64
	ReturnValue   int
	// ReturnMissing: the entry has no sstProvisioningReturnValue (fsm.Leaf's).
	ReturnMissing bool
	ExecutionTime []string // e.g. "snapshot: 5.108"

	// Backup and LastRestore are the leaf's records (records.go), nil if absent.
	Backup      *int
	LastRestore *RestoreRecord
}

// ParseLeaf reads a backup leaf. The DN must pass ParseLeafDN; Mode and State
// must be present (the entry may have been read with a subset of attributes,
// so absent ExecutionDate and ReturnValue read as 0).
func ParseLeaf(t Tree, e *ldap.Entry) (Leaf, error) {
	if e == nil {
		return Leaf{}, fmt.Errorf("%w: nil leaf entry", ErrMalformed)
	}
	vm, name, err := ParseLeafDN(t, e.DN)
	if err != nil {
		return Leaf{}, err
	}
	l := Leaf{DN: e.DN, VM: vm, Name: name, ExecutionTime: entryValues(e, AttrExecutionTime)}
	l.Backup = ParseBackupRecord(l.ExecutionTime)
	l.LastRestore = ParseRestoreRecord(entryValues(e, AttrDescription))
	var ok bool
	if l.Mode, ok = entryValue(e, AttrMode); !ok {
		return Leaf{}, fmt.Errorf("%w: leaf %q has no %s", ErrMalformed, e.DN, AttrMode)
	}
	if l.State, ok = entryValue(e, AttrState); !ok {
		return Leaf{}, fmt.Errorf("%w: leaf %q has no %s", ErrMalformed, e.DN, AttrState)
	}
	if l.ExecutionDate, err = entryInt[int64](e, AttrExecutionDate, 0); err != nil {
		return Leaf{}, err
	}
	if l.ReturnValue, err = entryInt(e, AttrReturnValue, 0); err != nil {
		return Leaf{}, err
	}
	_, has := entryValue(e, AttrReturnValue)
	l.ReturnMissing = !has
	return l, nil
}

// Time is when the backup was planned, from the leaf's name.
func (l Leaf) Time() time.Time {
	t, _ := fsm.ParseTime(l.Name) // checked by ParseLeaf
	return t
}

// Pending reports whether the leaf's mode is a request not yet answered.
func (l Leaf) Pending() bool { return l.State == fsm.Pending }

// Code is the leaf's return value as a ReturnCode.
func (l Leaf) Code() ReturnCode { return ReturnCode(l.ReturnValue) }

// NewLeafAddRequest creates a backup leaf as the control side does (Step 01 of
// the design): classes top, organizationalUnit and sstProvisioning, execution
// date and return value 0.
func NewLeafAddRequest(t Tree, vm, name, mode, state string) *ldap.AddRequest {
	req := ldap.NewAddRequest(t.Leaf(vm, name), nil)
	req.Attribute(AttrObjectClass, []string{ClassTop, ClassOrganizationalUnit, ClassProvisioning})
	req.Attribute(AttrOU, []string{name})
	req.Attribute(AttrExecutionDate, []string{"0"})
	req.Attribute(AttrMode, []string{mode})
	req.Attribute(AttrState, []string{state})
	req.Attribute(AttrReturnValue, []string{"0"})
	return req
}

// VMTypePersistent is sstVirtualMachineType of a persistent VM.
const VMTypePersistent = "persistent"

// VM is the part of a sstVirtualizationVirtualMachine entry backup and restore
// need.
type VM struct {
	DN          string
	Name        string // sstVirtualMachine, a SafeName
	Node        string // sstNode: the host that runs it
	Pool        string // sstVirtualMachinePool
	Type        string // sstVirtualMachineType: persistent, template, dynamic ...
	SubType     string
	DisplayName string
	MemoryBytes int64
	VCPU        int
	Status      string // sstStatus
	Hypervisor  string // sstType (kvm)
}

// ParseVM reads a VM entry. The name comes from the DN (see ParseVMDN); the
// sstVirtualMachine attribute, when read, must agree with it.
func ParseVM(t Tree, e *ldap.Entry) (VM, error) {
	if e == nil {
		return VM{}, fmt.Errorf("%w: nil VM entry", ErrMalformed)
	}
	name, err := ParseVMDN(t, e.DN)
	if err != nil {
		return VM{}, err
	}
	if names := entryValues(e, AttrVirtualMachine); len(names) > 0 && !containsFold(names, name) {
		return VM{}, fmt.Errorf("%w: VM %q has %s %q", ErrMalformed, e.DN, AttrVirtualMachine, names)
	}
	v := VM{DN: e.DN, Name: name}
	v.Node, _ = entryValue(e, AttrNode)
	v.Pool, _ = entryValue(e, AttrVirtualMachinePool)
	v.Type, _ = entryValue(e, AttrVirtualMachineType)
	v.SubType, _ = entryValue(e, AttrVirtualMachineSubType)
	v.DisplayName, _ = entryValue(e, AttrDisplayName)
	v.Status, _ = entryValue(e, AttrStatus)
	v.Hypervisor, _ = entryValue(e, AttrType)
	if v.MemoryBytes, err = entryInt[int64](e, AttrMemory, 0); err != nil {
		return VM{}, err
	}
	if v.VCPU, err = entryInt(e, AttrVCPU, 0); err != nil {
		return VM{}, err
	}
	return v, nil
}

// IsTemplate reports whether the VM is a VM template.
func (v VM) IsTemplate() bool { return strings.EqualFold(v.Type, VMTypeTemplate) }

// StorageKind is the directory level below the backup and retain roots:
// StorageTemplates for templates, StoragePersistent for all others.
func (v VM) StorageKind() string {
	if v.IsTemplate() {
		return StorageTemplates
	}
	return StoragePersistent
}

// NewVMAddRequest creates a VM entry. Every MUST attribute of
// sstVirtualizationVirtualMachine is filled: from v where given, else with small
// defaults (64 MiB, 1 vCPU, kvm, x86_64 pc hvm, shut off, node "localhost",
// pool "default", type persistent), so tests can create VMs in one line.
func NewVMAddRequest(t Tree, v VM) *ldap.AddRequest {
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	mem, vcpu := v.MemoryBytes, v.VCPU
	if mem <= 0 {
		mem = 64 << 20
	}
	if vcpu <= 0 {
		vcpu = 1
	}
	req := ldap.NewAddRequest(t.VM(v.Name), nil)
	req.Attribute(AttrObjectClass, []string{ClassTop, ClassVirtualMachine})
	req.Attribute(AttrVirtualMachine, []string{v.Name})
	req.Attribute(AttrVirtualMachinePool, []string{or(v.Pool, "default")})
	req.Attribute(AttrNode, []string{or(v.Node, "localhost")})
	req.Attribute(AttrDisplayName, []string{or(v.DisplayName, v.Name)})
	req.Attribute(AttrMemory, []string{strconv.FormatInt(mem, 10)})
	req.Attribute(AttrVCPU, []string{strconv.Itoa(vcpu)})
	req.Attribute(AttrStatus, []string{or(v.Status, "shutdown")})
	req.Attribute(AttrType, []string{or(v.Hypervisor, "kvm")})
	req.Attribute(AttrClockOffset, []string{"utc"})
	req.Attribute(AttrOnCrash, []string{"destroy"})
	req.Attribute(AttrOnPowerOff, []string{"destroy"})
	req.Attribute(AttrOnReboot, []string{"restart"})
	req.Attribute(AttrOSArchitecture, []string{"x86_64"})
	req.Attribute(AttrOSBootDevice, []string{"hd"})
	req.Attribute(AttrOSMachine, []string{"pc"})
	req.Attribute(AttrOSType, []string{"hvm"})
	req.Attribute(AttrVirtualMachineType, []string{or(v.Type, VMTypePersistent)})
	if v.SubType != "" {
		req.Attribute(AttrVirtualMachineSubType, []string{v.SubType})
	}
	return req
}

// NewDevicesAddRequest creates the VM's ou=devices container, the parent of
// its disk entries.
func NewDevicesAddRequest(t Tree, vm string) *ldap.AddRequest {
	req := ldap.NewAddRequest(t.Devices(vm), nil)
	req.Attribute(AttrObjectClass, []string{ClassTop, ClassOrganizationalUnit})
	req.Attribute(AttrOU, []string{"devices"})
	return req
}

// Disk is the part of a sstVirtualizationVirtualMachineDisk entry backup needs.
type Disk struct {
	DN         string
	VM         string
	Device     string // sstDevice: disk, cdrom, floppy
	Target     string // sstDisk: vda, vdb ...
	SourceFile string // sstSourceFile: the image path
}

// ParseDisk reads a disk entry below ou=devices of a VM.
func ParseDisk(t Tree, e *ldap.Entry) (Disk, error) {
	if e == nil {
		return Disk{}, fmt.Errorf("%w: nil disk entry", ErrMalformed)
	}
	vm, target, err := ParseDiskDN(t, e.DN)
	if err != nil {
		return Disk{}, err
	}
	d := Disk{DN: e.DN, VM: vm, Target: target}
	if v, ok := entryValue(e, AttrDisk); ok && !strings.EqualFold(v, target) {
		return Disk{}, fmt.Errorf("%w: disk %q has %s %q", ErrMalformed, e.DN, AttrDisk, v)
	}
	d.Device, _ = entryValue(e, AttrDevice)
	d.SourceFile, _ = entryValue(e, AttrSourceFile)
	return d, nil
}

// IsDisk reports whether the entry is a hard disk (not a CD-ROM or floppy):
// only those are backed up.
func (d Disk) IsDisk() bool { return strings.EqualFold(d.Device, DeviceDisk) }

// FileName is the base name of SourceFile, checked with SafeName: backup files
// are named after it.
func (d Disk) FileName() (string, error) {
	if !filepath.IsAbs(d.SourceFile) {
		return "", fmt.Errorf("%w: disk %q: source file %q is not an absolute path", ErrMalformed, d.DN, d.SourceFile)
	}
	name := filepath.Base(d.SourceFile)
	if err := SafeName(name); err != nil {
		return "", fmt.Errorf("%w: disk %q: %w", ErrMalformed, d.DN, err)
	}
	return name, nil
}

// StoragePool is the name of the directory holding the image
// (/var/virtualization/vm-persistent/<storage pool>/<image>), the level the
// backup and retain trees repeat.
func (d Disk) StoragePool() (string, error) {
	if !filepath.IsAbs(d.SourceFile) {
		return "", fmt.Errorf("%w: disk %q: source file %q is not an absolute path", ErrMalformed, d.DN, d.SourceFile)
	}
	pool := filepath.Base(filepath.Dir(filepath.Clean(d.SourceFile)))
	if err := SafeName(pool); err != nil || pool == string(filepath.Separator) {
		return "", fmt.Errorf("%w: disk %q: no storage pool directory in %q", ErrMalformed, d.DN, d.SourceFile)
	}
	return pool, nil
}

// NewDiskAddRequest creates a disk entry of vm (its ou=devices must exist).
// Device defaults to disk and Target to vda; bus virtio, type file, driver
// qemu/qcow2 fill the rest of the MUST attributes.
func NewDiskAddRequest(t Tree, vm string, d Disk) *ldap.AddRequest {
	if d.Device == "" {
		d.Device = DeviceDisk
	}
	if d.Target == "" {
		d.Target = "vda"
	}
	req := ldap.NewAddRequest(t.Disk(vm, d.Target), nil)
	req.Attribute(AttrObjectClass, []string{ClassTop, ClassDisk})
	req.Attribute(AttrDisk, []string{d.Target})
	req.Attribute(AttrDevice, []string{d.Device})
	req.Attribute(AttrTargetBus, []string{"virtio"})
	req.Attribute(AttrType, []string{"file"})
	req.Attribute(AttrDriverName, []string{"qemu"})
	req.Attribute(AttrDriverType, []string{"qcow2"})
	if d.SourceFile != "" {
		req.Attribute(AttrSourceFile, []string{d.SourceFile})
	}
	return req
}

// Schema defaults of a backup configuration, applied to absent attributes.
const (
	DefaultBackupRoot    = "/var/backup/virtualization"
	DefaultRetainDir     = "/var/virtualization/retain"
	DefaultRAMDisk       = "/mnt/ramdisk"
	DefaultImageFormat   = "qcow2"
	DefaultOwner         = "root"
	DefaultGroup         = "vm-storage"
	DefaultPermission    = os.FileMode(0o660)
	DefaultDirPermission = os.FileMode(0o770)
	DefaultIterations    = 1
)

// BackupConfig is a sstVirtualizationBackupObjectClass entry (with its
// sstCronObjectClass schedule), at VM, pool or global level. Directories are
// plain absolute paths: the directory holds file:// URLs.
type BackupConfig struct {
	DN string

	CronMinute, CronHour, CronDay, CronMonth, CronDayOfWeek []string
	CronActive                                              bool

	RootDir, RetainDir, RAMDisk string

	Format, Owner, Group string
	Permission           os.FileMode
	DirOwner, DirGroup   string
	DirPermission        os.FileMode

	Iterations          int
	ForceStart          bool
	Exclude             bool
	RestoreWithoutState bool
	BandwidthMerge      int // MB/s, 0 = unlimited
}

// HasBackupClass reports whether e carries sstVirtualizationBackupObjectClass,
// i.e. is a backup configuration.
func HasBackupClass(e *ldap.Entry) bool {
	return e != nil && containsFold(entryValues(e, AttrObjectClass), ClassBackup)
}

// HasCron reports whether the configuration has a schedule to write.
func (c BackupConfig) HasCron() bool {
	return c.CronActive || len(c.CronMinute)+len(c.CronHour)+len(c.CronDay)+len(c.CronMonth)+len(c.CronDayOfWeek) > 0
}

// ParseBackupConfig reads a backup configuration entry (it must carry the
// backup class, else the error wraps ErrNoConfig), applying the schema
// defaults to absent attributes. Permissions read as octal with or without a
// leading 0 ("660", "0660"). A location with another scheme than file:// is
// refused with ErrUnsupportedProtocol.
func ParseBackupConfig(e *ldap.Entry) (BackupConfig, error) {
	if !HasBackupClass(e) {
		dn := "<nil>"
		if e != nil {
			dn = e.DN
		}
		return BackupConfig{}, fmt.Errorf("%w: %q does not carry %s", ErrNoConfig, dn, ClassBackup)
	}
	c := BackupConfig{
		DN:            e.DN,
		CronMinute:    entryValues(e, AttrCronMinute),
		CronHour:      entryValues(e, AttrCronHour),
		CronDay:       entryValues(e, AttrCronDay),
		CronMonth:     entryValues(e, AttrCronMonth),
		CronDayOfWeek: entryValues(e, AttrCronDayOfWeek),
		Format:        entryValueOr(e, AttrDiskImageFormat, DefaultImageFormat),
		Owner:         entryValueOr(e, AttrDiskImageOwner, DefaultOwner),
		Group:         entryValueOr(e, AttrDiskImageGroup, DefaultGroup),
		DirOwner:      entryValueOr(e, AttrDiskImageDirectoryOwner, DefaultOwner),
		DirGroup:      entryValueOr(e, AttrDiskImageDirectoryGroup, DefaultGroup),
	}
	var err error
	for _, b := range []struct {
		attr string
		dst  *bool
	}{
		{AttrCronActive, &c.CronActive},
		{AttrForceStart, &c.ForceStart},
		{AttrBackupExcludeFromBackup, &c.Exclude},
		{AttrRestoreVMWithoutState, &c.RestoreWithoutState},
	} {
		if *b.dst, err = entryBool(e, b.attr); err != nil {
			return BackupConfig{}, err
		}
	}
	for _, l := range []struct {
		attr, def string
		dst       *string
	}{
		{AttrBackupRootDirectory, DefaultBackupRoot, &c.RootDir},
		{AttrBackupRetainDirectory, DefaultRetainDir, &c.RetainDir},
		{AttrBackupRamDiskLocation, DefaultRAMDisk, &c.RAMDisk},
	} {
		v, ok := entryValue(e, l.attr)
		if !ok {
			*l.dst = l.def
			continue
		}
		if *l.dst, err = LocationPath(v); err != nil {
			return BackupConfig{}, fmt.Errorf("%s of %q: %w", l.attr, e.DN, err)
		}
	}
	if c.Permission, err = entryMode(e, AttrDiskImagePermission, DefaultPermission); err != nil {
		return BackupConfig{}, err
	}
	if c.DirPermission, err = entryMode(e, AttrDiskImageDirectoryPermission, DefaultDirPermission); err != nil {
		return BackupConfig{}, err
	}
	if c.Iterations, err = entryInt(e, AttrBackupNumberOfIterations, DefaultIterations); err != nil {
		return BackupConfig{}, err
	}
	if c.Iterations < 1 {
		return BackupConfig{}, fmt.Errorf("%w: %s of %q is %d, must be at least 1", ErrMalformed, AttrBackupNumberOfIterations, e.DN, c.Iterations)
	}
	if c.BandwidthMerge, err = entryInt(e, AttrBandwidthMerge, 0); err != nil {
		return BackupConfig{}, err
	}
	if c.BandwidthMerge < 0 {
		return BackupConfig{}, fmt.Errorf("%w: %s of %q is negative", ErrMalformed, AttrBandwidthMerge, e.DN)
	}
	return c, nil
}

// Attributes renders the configuration's values for an add or a replace:
// every backup attribute explicitly (defaults included), locations as file://
// URLs, permissions as octal without a leading 0 ("660", what the schema's
// INTEGER syntax accepts), and the schedule when HasCron, with "*" for unset
// fields. Object classes and ou are not included (see NewBackupConfigAddRequest).
func (c BackupConfig) Attributes() map[string][]string {
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	perm := func(m, def os.FileMode) string {
		if m == 0 {
			m = def
		}
		return FormatFileMode(m)
	}
	it := c.Iterations
	if it < 1 {
		it = DefaultIterations
	}
	a := map[string][]string{
		AttrBackupRootDirectory:          {LocationURL(or(c.RootDir, DefaultBackupRoot))},
		AttrBackupRetainDirectory:        {LocationURL(or(c.RetainDir, DefaultRetainDir))},
		AttrBackupRamDiskLocation:        {LocationURL(or(c.RAMDisk, DefaultRAMDisk))},
		AttrDiskImageFormat:              {or(c.Format, DefaultImageFormat)},
		AttrDiskImageOwner:               {or(c.Owner, DefaultOwner)},
		AttrDiskImageGroup:               {or(c.Group, DefaultGroup)},
		AttrDiskImagePermission:          {perm(c.Permission, DefaultPermission)},
		AttrDiskImageDirectoryOwner:      {or(c.DirOwner, DefaultOwner)},
		AttrDiskImageDirectoryGroup:      {or(c.DirGroup, DefaultGroup)},
		AttrDiskImageDirectoryPermission: {perm(c.DirPermission, DefaultDirPermission)},
		AttrBackupNumberOfIterations:     {strconv.Itoa(it)},
		AttrForceStart:                   {ldapBool(c.ForceStart)},
		AttrBackupExcludeFromBackup:      {ldapBool(c.Exclude)},
		AttrRestoreVMWithoutState:        {ldapBool(c.RestoreWithoutState)},
		AttrBandwidthMerge:               {strconv.Itoa(c.BandwidthMerge)},
	}
	if c.HasCron() {
		cron := func(v []string) []string {
			if len(v) == 0 {
				return []string{"*"}
			}
			return v
		}
		a[AttrCronMinute] = cron(c.CronMinute)
		a[AttrCronHour] = cron(c.CronHour)
		a[AttrCronDay] = cron(c.CronDay)
		a[AttrCronMonth] = cron(c.CronMonth)
		a[AttrCronDayOfWeek] = cron(c.CronDayOfWeek)
		a[AttrCronActive] = []string{ldapBool(c.CronActive)}
	}
	return a
}

// NewBackupConfigAddRequest creates a backup configuration entry at dn (one of
// Tree's VMBackup, PoolBackup or GlobalBackup): an organizationalUnit "backup"
// with the backup class, and the cron class when c.HasCron().
func NewBackupConfigAddRequest(dn string, c BackupConfig) *ldap.AddRequest {
	classes := []string{ClassTop, ClassOrganizationalUnit, ClassBackup}
	if c.HasCron() {
		classes = append(classes, ClassCron)
	}
	req := ldap.NewAddRequest(dn, nil)
	req.Attribute(AttrObjectClass, classes)
	req.Attribute(AttrOU, []string{"backup"})
	attrs := c.Attributes()
	for _, name := range sortedKeys(attrs) {
		req.Attribute(name, attrs[name])
	}
	return req
}

// EffectiveConfig picks the configuration that applies to a VM: the first of
// its own ou=backup entry, its pool's and the global one that carries the
// backup class wins, whole (no merging of attributes), as in the original.
// Pass nil for entries that do not exist, and read the others with
// objectClass (the class decides). It returns the source's DN; with no
// configuration at all the error wraps ErrNoConfig. A broken configuration is
// an error, not a reason to fall back to the next level.
func EffectiveConfig(vm, pool, global *ldap.Entry) (BackupConfig, string, error) {
	for _, e := range []*ldap.Entry{vm, pool, global} {
		if HasBackupClass(e) {
			c, err := ParseBackupConfig(e)
			return c, e.DN, err
		}
	}
	return BackupConfig{}, "", fmt.Errorf("%w: neither the VM, its pool nor the global ou=backup carries %s", ErrNoConfig, ClassBackup)
}

// LocationPath turns a backup location as stored (file:///var/backup, or a
// plain /path as the RAM disk default) into a clean absolute path. Other
// schemes are refused with ErrUnsupportedProtocol, relative paths with
// ErrMalformed. Like the original, the rest of a file:// URL is taken
// literally (no %-decoding): that is what the web UI writes.
func LocationPath(loc string) (string, error) {
	p := strings.TrimSpace(loc)
	if i := strings.Index(p, "://"); i >= 0 {
		scheme, rest := p[:i], p[i+3:]
		if !strings.EqualFold(scheme, "file") {
			return "", fmt.Errorf("%w: %q", ErrUnsupportedProtocol, loc)
		}
		switch {
		case strings.HasPrefix(rest, "/"):
			p = rest
		case strings.HasPrefix(strings.ToLower(rest), "localhost/"):
			p = rest[len("localhost"):]
		default:
			return "", fmt.Errorf("%w: %q names a remote host", ErrUnsupportedProtocol, loc)
		}
	}
	if !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: location %q is not an absolute path", ErrMalformed, loc)
	}
	return filepath.Clean(p), nil
}

// LocationURL is the inverse of LocationPath: file://<path>.
func LocationURL(path string) string { return "file://" + path }

// ParseFileMode reads an octal permission as stored ("660" or "0660").
func ParseFileMode(s string) (os.FileMode, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 5 || strings.Trim(s, "01234567") != "" {
		return 0, fmt.Errorf("%w: permission %q is not an octal number", ErrMalformed, s)
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o7777 {
		return 0, fmt.Errorf("%w: permission %q is out of range", ErrMalformed, s)
	}
	m := os.FileMode(n & 0o777)
	if n&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if n&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if n&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m, nil
}

// FormatFileMode writes a permission the way the schema's INTEGER syntax takes
// it: octal without a leading 0 ("660", "2770").
func FormatFileMode(m os.FileMode) string {
	n := uint64(m.Perm())
	if m&os.ModeSetuid != 0 {
		n |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		n |= 0o1000
	}
	return strconv.FormatUint(n, 8)
}

// EntryOf turns an add request into the entry it creates, e.g. to parse what
// one is about to write or to keep it in an in-memory directory.
func EntryOf(req *ldap.AddRequest) *ldap.Entry {
	e := &ldap.Entry{DN: req.DN}
	for _, a := range req.Attributes {
		e.Attributes = append(e.Attributes, ldap.NewEntryAttribute(a.Type, append([]string(nil), a.Vals...)))
	}
	return e
}

// AddRequestOf turns an entry (e.g. read back from a saved LDIF) into the add
// request that recreates it. Operational attributes are the caller's to drop.
func AddRequestOf(e *ldap.Entry) *ldap.AddRequest {
	req := ldap.NewAddRequest(e.DN, nil)
	for _, a := range e.Attributes {
		req.Attribute(a.Name, append([]string(nil), attrStrings(a)...))
	}
	return req
}

// attrStrings returns an attribute's values, whichever of Values and
// ByteValues the producer filled.
func attrStrings(a *ldap.EntryAttribute) []string {
	if len(a.Values) >= len(a.ByteValues) {
		return a.Values
	}
	s := make([]string, len(a.ByteValues))
	for i, b := range a.ByteValues {
		s[i] = string(b)
	}
	return s
}

func entryValues(e *ldap.Entry, attr string) []string {
	for _, a := range e.Attributes {
		if strings.EqualFold(a.Name, attr) {
			return attrStrings(a)
		}
	}
	return nil
}

func entryValue(e *ldap.Entry, attr string) (string, bool) {
	v := entryValues(e, attr)
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func entryValueOr(e *ldap.Entry, attr, def string) string {
	if v, ok := entryValue(e, attr); ok && v != "" {
		return v
	}
	return def
}

// entryInt reads an integer attribute into the field's own type; absent is def.
func entryInt[N int | int64](e *ldap.Entry, attr string, def N) (N, error) {
	v, ok := entryValue(e, attr)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s of %q is %q, not an integer", ErrMalformed, attr, e.DN, v)
	}
	return N(n), nil
}

// entryBool reads LDAP Boolean syntax; absent is FALSE, the schema default of
// every boolean here.
func entryBool(e *ldap.Entry, attr string) (bool, error) {
	v, ok := entryValue(e, attr)
	if !ok {
		return false, nil
	}
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case ValueTrue:
		return true, nil
	case ValueFalse:
		return false, nil
	}
	return false, fmt.Errorf("%w: %s of %q is %q, not TRUE or FALSE", ErrMalformed, attr, e.DN, v)
}

func entryMode(e *ldap.Entry, attr string, def os.FileMode) (os.FileMode, error) {
	v, ok := entryValue(e, attr)
	if !ok {
		return def, nil
	}
	m, err := ParseFileMode(v)
	if err != nil {
		return 0, fmt.Errorf("%s of %q: %w", attr, e.DN, err)
	}
	return m, nil
}

func ldapBool(b bool) string {
	if b {
		return ValueTrue
	}
	return ValueFalse
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
