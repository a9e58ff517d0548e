package ldapschema

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
)

// designEntries reads the design's Step 00/01 fixture: config, then leaf.
func designEntries(t *testing.T) (config, leaf *ldap.Entry) {
	t.Helper()
	data, err := os.ReadFile("testdata/design-step00-01.ldif")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ParseLDIF(string(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("fixture has %d entries, want 2", len(entries))
	}
	return entries[0], entries[1]
}

// mustOf returns the MUST attributes of an object class as SchemaLDIF defines it.
func mustOf(t *testing.T, class string) []string {
	t.Helper()
	unfolded := strings.ReplaceAll(string(SchemaLDIF), "\n ", "")
	re := regexp.MustCompile(`NAME '` + class + `'[^\n]*?MUST (\([^)]*\)|\S+)`)
	m := re.FindStringSubmatch(unfolded)
	if m == nil {
		t.Fatalf("class %s has no MUST in SchemaLDIF", class)
	}
	var attrs []string
	for _, a := range strings.FieldsFunc(m[1], func(r rune) bool { return r == '(' || r == ')' || r == '$' || r == ' ' }) {
		attrs = append(attrs, a)
	}
	return attrs
}

// wantAttrs fails the test for each of attrs that req, named what, gives no value.
func wantAttrs(t *testing.T, what string, req *ldap.AddRequest, attrs []string) {
	t.Helper()
	for _, a := range attrs {
		if !hasAttr(req, a) {
			t.Errorf("%s lacks %s", what, a)
		}
	}
}

func hasAttr(req *ldap.AddRequest, name string) bool {
	for _, a := range req.Attributes {
		if strings.EqualFold(a.Type, name) && len(a.Vals) > 0 && a.Vals[0] != "" {
			return true
		}
	}
	return false
}

func TestLeafFromDesign(t *testing.T) {
	_, e := designEntries(t)
	l, err := ParseLeaf(testTree, e)
	if err != nil {
		t.Fatal(err)
	}
	want := Leaf{
		DN: e.DN, VM: "kvm-005", Name: "20121002T010000Z",
		Mode: "initialize", State: "20121002T014513Z",
	}
	if !reflect.DeepEqual(l, want) {
		t.Fatalf("ParseLeaf =\n%+v\nwant\n%+v", l, want)
	}
	if l.Pending() || l.Code() != RCSuccess || fsm.FormatTime(l.Time()) != "20121002T010000Z" {
		t.Errorf("Pending %v, Code %v, Time %v", l.Pending(), l.Code(), l.Time())
	}
}

func TestLeafRoundTrip(t *testing.T) {
	req := NewLeafAddRequest(testTree, "kvm-005", "20121002T010000Z", "initialize", fsm.Pending)
	if req.DN != testTree.Leaf("kvm-005", "20121002T010000Z") {
		t.Fatalf("DN = %q", req.DN)
	}
	wantAttrs(t, "leaf add request", req, append(mustOf(t, ClassProvisioning), AttrOU, AttrReturnValue))
	e := EntryOf(req)
	if got := entryValues(e, AttrObjectClass); !reflect.DeepEqual(got, []string{ClassTop, ClassOrganizationalUnit, ClassProvisioning}) {
		t.Errorf("classes = %q", got)
	}
	l, err := ParseLeaf(testTree, e)
	if err != nil {
		t.Fatal(err)
	}
	want := Leaf{DN: req.DN, VM: "kvm-005", Name: "20121002T010000Z", Mode: "initialize", State: "0"}
	if !reflect.DeepEqual(l, want) || !l.Pending() {
		t.Fatalf("round trip = %+v, want %+v", l, want)
	}

	// A finished leaf as the node writes it, read with attribute names in
	// another case, as servers may return them.
	done := ldap.NewEntry(req.DN, map[string][]string{
		"SSTPROVISIONINGMODE":          {"snapshotted"},
		"sstprovisioningstate":         {"20121002T010011Z"},
		"sstProvisioningReturnValue":   {"5"},
		"sstProvisioningExecutionDate": {"20121002"},
		"sstProvisioningExecutionTime": {"snapshot: 5.108", "downtime: 3"},
	})
	l, err = ParseLeaf(testTree, done)
	if err != nil {
		t.Fatal(err)
	}
	want = Leaf{DN: req.DN, VM: "kvm-005", Name: "20121002T010000Z", Mode: "snapshotted", State: "20121002T010011Z",
		ExecutionDate: 20121002, ReturnValue: 5, ExecutionTime: []string{"snapshot: 5.108", "downtime: 3"}}
	if !reflect.DeepEqual(l, want) || l.Code() != RCCannotSaveState {
		t.Fatalf("ParseLeaf = %+v, want %+v", l, want)
	}
}

func TestParseLeafRefuses(t *testing.T) {
	dn := testTree.Leaf("kvm-005", "20121002T010000Z")
	for name, e := range map[string]*ldap.Entry{
		"nil":          nil,
		"no mode":      ldap.NewEntry(dn, map[string][]string{AttrState: {"0"}}),
		"no state":     ldap.NewEntry(dn, map[string][]string{AttrMode: {"snapshot"}}),
		"bad rv":       ldap.NewEntry(dn, map[string][]string{AttrMode: {"x"}, AttrState: {"0"}, AttrReturnValue: {"five"}}),
		"bad date":     ldap.NewEntry(dn, map[string][]string{AttrMode: {"x"}, AttrState: {"0"}, AttrExecutionDate: {"2012-10-02"}}),
		"not a leaf":   ldap.NewEntry(testTree.VMBackup("kvm-005"), map[string][]string{AttrMode: {"x"}, AttrState: {"0"}}),
		"unsafe vm":    ldap.NewEntry(testTree.Leaf("..", "20121002T010000Z"), map[string][]string{AttrMode: {"x"}, AttrState: {"0"}}),
		"bad leafname": ldap.NewEntry(testTree.Leaf("kvm-005", "yesterday"), map[string][]string{AttrMode: {"x"}, AttrState: {"0"}}),
	} {
		if _, err := ParseLeaf(testTree, e); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
	}
}

func TestVMRoundTrip(t *testing.T) {
	v := VM{
		Name: "b6dc3d27-5981-4b18-8f3f-31ed3d21a3c6", Node: "node-01", Pool: "0f83f084-8080-413e-b558-b678e504836e",
		Type: "persistent", SubType: "Server", DisplayName: "web server", MemoryBytes: 512 << 20, VCPU: 2,
		Status: "running", Hypervisor: "kvm",
	}
	req := NewVMAddRequest(testTree, v)
	wantAttrs(t, "VM add request", req, mustOf(t, ClassVirtualMachine))
	got, err := ParseVM(testTree, EntryOf(req))
	if err != nil {
		t.Fatal(err)
	}
	v.DN = testTree.VM(v.Name)
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, v)
	}
	if got.IsTemplate() || got.StorageKind() != StoragePersistent {
		t.Errorf("persistent VM: IsTemplate %v, StorageKind %q", got.IsTemplate(), got.StorageKind())
	}

	// Only a name: every MUST attribute still gets a value.
	minimal := NewVMAddRequest(testTree, VM{Name: "kvm-005"})
	wantAttrs(t, "minimal VM add request", minimal, mustOf(t, ClassVirtualMachine))
	m, err := ParseVM(testTree, EntryOf(minimal))
	if err != nil || m.MemoryBytes <= 0 || m.VCPU <= 0 || m.Type != VMTypePersistent || m.DisplayName != "kvm-005" {
		t.Errorf("minimal VM = %+v, %v", m, err)
	}
}

func TestVMStorageKind(t *testing.T) {
	for typ, want := range map[string]string{
		"template": StorageTemplates, "Template": StorageTemplates,
		"persistent": StoragePersistent, "dynamic": StoragePersistent, "": StoragePersistent,
	} {
		if got := (VM{Type: typ}).StorageKind(); got != want {
			t.Errorf("StorageKind(%q) = %q, want %q", typ, got, want)
		}
	}
}

func TestParseVMRefuses(t *testing.T) {
	for name, e := range map[string]*ldap.Entry{
		"nil":        nil,
		"name clash": ldap.NewEntry(testTree.VM("a"), map[string][]string{AttrVirtualMachine: {"b"}}),
		"memory":     ldap.NewEntry(testTree.VM("a"), map[string][]string{AttrMemory: {"1G"}}),
		"vcpu":       ldap.NewEntry(testTree.VM("a"), map[string][]string{AttrVCPU: {"two"}}),
		"unsafe":     ldap.NewEntry(testTree.VM("a/b"), nil),
		"not a VM":   ldap.NewEntry(testTree.Pool("a"), nil),
	} {
		if _, err := ParseVM(testTree, e); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		}
	}
}

func TestDiskRoundTrip(t *testing.T) {
	d := Disk{VM: "kvm-005", Device: "disk", Target: "vdb",
		SourceFile: "/var/virtualization/vm-persistent/0f83f084-8080/8798561b-d5de.qcow2"}
	req := NewDiskAddRequest(testTree, "kvm-005", d)
	wantAttrs(t, "disk add request", req, mustOf(t, ClassDisk))
	got, err := ParseDisk(testTree, EntryOf(req))
	if err != nil {
		t.Fatal(err)
	}
	d.DN = testTree.Disk("kvm-005", "vdb")
	if !reflect.DeepEqual(got, d) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, d)
	}
	if !got.IsDisk() {
		t.Error("IsDisk = false")
	}
	if f, err := got.FileName(); err != nil || f != "8798561b-d5de.qcow2" {
		t.Errorf("FileName = %q, %v", f, err)
	}
	if p, err := got.StoragePool(); err != nil || p != "0f83f084-8080" {
		t.Errorf("StoragePool = %q, %v", p, err)
	}
	if def := NewDiskAddRequest(testTree, "kvm-005", Disk{}); def.DN != testTree.Disk("kvm-005", "vda") || !hasAttr(def, AttrDevice) {
		t.Errorf("default disk: %+v", def)
	}
	if NewDevicesAddRequest(testTree, "kvm-005").DN != testTree.Devices("kvm-005") {
		t.Error("devices DN")
	}
	cd := Disk{Device: "cdrom"}
	if cd.IsDisk() {
		t.Error("a cdrom is not a disk")
	}
	for _, src := range []string{"", "relative/x.qcow2", "/", "/x/..", "/var/-x/-y"} {
		bad := Disk{DN: "d", SourceFile: src}
		_, err1 := bad.FileName()
		_, err2 := bad.StoragePool()
		if !errors.Is(err1, ErrMalformed) && !errors.Is(err2, ErrMalformed) {
			t.Errorf("source file %q: FileName %v, StoragePool %v; want an ErrMalformed", src, err1, err2)
		}
	}
	if _, err := ParseDisk(testTree, ldap.NewEntry(testTree.Disk("kvm-005", "vda"), map[string][]string{AttrDisk: {"vdb"}})); !errors.Is(err, ErrMalformed) {
		t.Errorf("sstDisk disagreeing with the DN: %v", err)
	}
}

func TestBackupConfigFromDesign(t *testing.T) {
	e, _ := designEntries(t)
	c, err := ParseBackupConfig(e)
	if err != nil {
		t.Fatal(err)
	}
	want := BackupConfig{
		DN:         e.DN,
		CronMinute: []string{"0"}, CronHour: []string{"3"}, CronDay: []string{"*"}, CronMonth: []string{"*"}, CronDayOfWeek: []string{"*"},
		CronActive: true,
		RootDir:    "/var/backup/virtualization", RetainDir: "/var/virtualization/retain", RAMDisk: "/mnt/ramdisk-test",
		Format: "qcow2", Owner: "root", Group: "vm-storage", Permission: 0o660,
		DirOwner: "root", DirGroup: "vm-storage", DirPermission: 0o770,
		Iterations: 1,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("ParseBackupConfig =\n%+v\nwant\n%+v", c, want)
	}
}

func TestBackupConfigDefaults(t *testing.T) {
	e := ldap.NewEntry("ou=backup,x", map[string][]string{AttrObjectClass: {"top", "organizationalUnit", "SSTVIRTUALIZATIONBACKUPOBJECTCLASS"}})
	c, err := ParseBackupConfig(e)
	if err != nil {
		t.Fatal(err)
	}
	want := BackupConfig{
		DN: "ou=backup,x", RootDir: "/var/backup/virtualization", RetainDir: "/var/virtualization/retain", RAMDisk: "/mnt/ramdisk",
		Format: "qcow2", Owner: "root", Group: "vm-storage", Permission: 0o660,
		DirOwner: "root", DirGroup: "vm-storage", DirPermission: 0o770, Iterations: 1,
	}
	if !reflect.DeepEqual(c, want) || c.HasCron() {
		t.Fatalf("defaults =\n%+v\nwant\n%+v", c, want)
	}
}

func backupEntry(attrs map[string][]string) *ldap.Entry {
	attrs[AttrObjectClass] = []string{ClassTop, ClassOrganizationalUnit, ClassBackup}
	return ldap.NewEntry("ou=backup,x", attrs)
}

func TestBackupConfigValues(t *testing.T) {
	for _, tc := range []struct {
		attr, value string
		check       func(BackupConfig) bool
	}{
		{AttrDiskImagePermission, "0660", func(c BackupConfig) bool { return c.Permission == 0o660 }},
		{AttrDiskImagePermission, "640", func(c BackupConfig) bool { return c.Permission == 0o640 }},
		{AttrDiskImagePermission, "2770", func(c BackupConfig) bool { return c.Permission == 0o770|os.ModeSetgid }},
		{AttrDiskImageDirectoryPermission, "0750", func(c BackupConfig) bool { return c.DirPermission == 0o750 }},
		{AttrBackupRootDirectory, "file:///srv/backup/", func(c BackupConfig) bool { return c.RootDir == "/srv/backup" }},
		{AttrBackupRootDirectory, "FILE://localhost/srv/b", func(c BackupConfig) bool { return c.RootDir == "/srv/b" }},
		{AttrBackupRootDirectory, "file:///srv/with%20percent", func(c BackupConfig) bool { return c.RootDir == "/srv/with%20percent" }},
		{AttrBackupRamDiskLocation, "/mnt/ram", func(c BackupConfig) bool { return c.RAMDisk == "/mnt/ram" }},
		{AttrBackupNumberOfIterations, "7", func(c BackupConfig) bool { return c.Iterations == 7 }},
		{AttrBandwidthMerge, "50", func(c BackupConfig) bool { return c.BandwidthMerge == 50 }},
		{AttrForceStart, "TRUE", func(c BackupConfig) bool { return c.ForceStart }},
		{AttrBackupExcludeFromBackup, "true", func(c BackupConfig) bool { return c.Exclude }},
		{AttrRestoreVMWithoutState, "TRUE", func(c BackupConfig) bool { return c.RestoreWithoutState }},
		{AttrCronDayOfWeek, "1,3,5", func(c BackupConfig) bool { return reflect.DeepEqual(c.CronDayOfWeek, []string{"1,3,5"}) }},
	} {
		c, err := ParseBackupConfig(backupEntry(map[string][]string{tc.attr: {tc.value}}))
		if err != nil || !tc.check(c) {
			t.Errorf("%s: %s: got %+v, %v", tc.attr, tc.value, c, err)
		}
	}
}

func TestBackupConfigRefuses(t *testing.T) {
	for _, tc := range []struct {
		attr, value string
		want        error
	}{
		{AttrBackupRootDirectory, "ssh://backup/var/backup", ErrUnsupportedProtocol},
		{AttrBackupRetainDirectory, "nfs://server/export", ErrUnsupportedProtocol},
		{AttrBackupRamDiskLocation, "file://otherhost/mnt", ErrUnsupportedProtocol},
		{AttrBackupRootDirectory, "file://relative", ErrUnsupportedProtocol},
		{AttrBackupRootDirectory, "var/backup", ErrMalformed},
		{AttrBackupRootDirectory, "", ErrMalformed},
		{AttrDiskImagePermission, "rw-rw----", ErrMalformed},
		{AttrDiskImagePermission, "680", ErrMalformed},
		{AttrDiskImagePermission, "17777", ErrMalformed},
		{AttrDiskImagePermission, "-660", ErrMalformed},
		{AttrDiskImageDirectoryPermission, "", ErrMalformed},
		{AttrBackupNumberOfIterations, "0", ErrMalformed},
		{AttrBackupNumberOfIterations, "many", ErrMalformed},
		{AttrBandwidthMerge, "-1", ErrMalformed},
		{AttrForceStart, "yes", ErrMalformed},
		{AttrCronActive, "1", ErrMalformed},
	} {
		_, err := ParseBackupConfig(backupEntry(map[string][]string{tc.attr: {tc.value}}))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %q: error %v, want %v", tc.attr, tc.value, err, tc.want)
		}
	}
	noClass := ldap.NewEntry("ou=backup,x", map[string][]string{AttrObjectClass: {"top", "organizationalUnit"}})
	if _, err := ParseBackupConfig(noClass); !errors.Is(err, ErrNoConfig) {
		t.Errorf("entry without the backup class: %v, want ErrNoConfig", err)
	}
	if _, err := ParseBackupConfig(nil); !errors.Is(err, ErrNoConfig) {
		t.Errorf("nil entry: %v, want ErrNoConfig", err)
	}
}

func TestBackupConfigRoundTrip(t *testing.T) {
	for _, c := range []BackupConfig{
		{
			CronMinute: []string{"30"}, CronHour: []string{"2"}, CronDay: []string{"*"}, CronMonth: []string{"*"},
			CronDayOfWeek: []string{"1,3,5"}, CronActive: true,
			RootDir: "/srv/backup", RetainDir: "/srv/retain", RAMDisk: "/mnt/ramdisk",
			Format: "qcow2", Owner: "qemu", Group: "kvm", Permission: 0o640,
			DirOwner: "root", DirGroup: "kvm", DirPermission: 0o750 | os.ModeSetgid,
			Iterations: 3, ForceStart: true, Exclude: false, RestoreWithoutState: true, BandwidthMerge: 100,
		},
		{ // exclusion only, no schedule
			RootDir: DefaultBackupRoot, RetainDir: DefaultRetainDir, RAMDisk: DefaultRAMDisk,
			Format: "qcow2", Owner: "root", Group: "vm-storage", Permission: 0o660,
			DirOwner: "root", DirGroup: "vm-storage", DirPermission: 0o770, Iterations: 1, Exclude: true,
		},
	} {
		dn := testTree.VMBackup("kvm-005")
		req := NewBackupConfigAddRequest(dn, c)
		e := EntryOf(req)
		if c.HasCron() != containsFold(entryValues(e, AttrObjectClass), ClassCron) {
			t.Errorf("cron class present = %v, want %v", !c.HasCron(), c.HasCron())
		}
		if c.HasCron() {
			wantAttrs(t, "config with schedule", req, mustOf(t, ClassCron))
		}
		got, err := ParseBackupConfig(e)
		if err != nil {
			t.Fatal(err)
		}
		c.DN = dn
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, c)
		}
	}
	// Permissions are written the way the schema's INTEGER syntax takes them.
	a := BackupConfig{}.Attributes()
	if a[AttrDiskImagePermission][0] != "660" || a[AttrDiskImageDirectoryPermission][0] != "770" {
		t.Errorf("permissions written as %q and %q", a[AttrDiskImagePermission], a[AttrDiskImageDirectoryPermission])
	}
	if a[AttrBackupRootDirectory][0] != "file:///var/backup/virtualization" || a[AttrBackupNumberOfIterations][0] != "1" {
		t.Errorf("defaults written as %q, %q", a[AttrBackupRootDirectory], a[AttrBackupNumberOfIterations])
	}
	if _, ok := a[AttrCronActive]; ok {
		t.Error("a config without schedule must not write cron attributes")
	}
	// A partial schedule gets "*" for the rest, so the cron class's MUST holds.
	p := BackupConfig{CronHour: []string{"4"}}.Attributes()
	if p[AttrCronMinute][0] != "*" || p[AttrCronHour][0] != "4" || p[AttrCronActive][0] != "FALSE" {
		t.Errorf("partial schedule written as %v", p)
	}
}

func TestEffectiveConfig(t *testing.T) {
	cfg := func(dn string, iterations string) *ldap.Entry {
		return ldap.NewEntry(dn, map[string][]string{
			AttrObjectClass: {ClassTop, ClassOrganizationalUnit, ClassBackup}, AttrBackupNumberOfIterations: {iterations},
		})
	}
	vmCfg := cfg(testTree.VMBackup("kvm-005"), "5")
	// A VM's ou=backup without the class only holds leaves: not a config.
	vmPlain := ldap.NewEntry(testTree.VMBackup("kvm-005"), map[string][]string{AttrObjectClass: {ClassTop, ClassOrganizationalUnit}})
	poolCfg := cfg(testTree.PoolBackup("p1"), "3")
	global := cfg(testTree.GlobalBackup(), "2")

	for _, tc := range []struct {
		name             string
		vm, pool, global *ldap.Entry
		wantDN           string
		wantIterations   int
	}{
		{"VM wins", vmCfg, poolCfg, global, vmCfg.DN, 5},
		{"pool next", vmPlain, poolCfg, global, poolCfg.DN, 3},
		{"global last", nil, nil, global, global.DN, 2},
		{"no merging", vmCfg, cfg(testTree.PoolBackup("p1"), "9"), global, vmCfg.DN, 5},
	} {
		c, dn, err := EffectiveConfig(tc.vm, tc.pool, tc.global)
		if err != nil || dn != tc.wantDN || c.DN != tc.wantDN || c.Iterations != tc.wantIterations {
			t.Errorf("%s: got %q, %d iterations, %v", tc.name, dn, c.Iterations, err)
		}
	}
	// The VM's own config wins whole: its defaults are not filled from the pool.
	sparse := ldap.NewEntry(testTree.VMBackup("kvm-005"), map[string][]string{AttrObjectClass: {ClassBackup}})
	if c, _, _ := EffectiveConfig(sparse, poolCfg, global); c.Iterations != DefaultIterations {
		t.Errorf("merged with the pool: %d iterations", c.Iterations)
	}
	if _, _, err := EffectiveConfig(vmPlain, nil, nil); !errors.Is(err, ErrNoConfig) {
		t.Errorf("no config: %v, want ErrNoConfig", err)
	}
	broken := cfg(testTree.VMBackup("kvm-005"), "0")
	if _, dn, err := EffectiveConfig(broken, poolCfg, global); !errors.Is(err, ErrMalformed) || dn != broken.DN {
		t.Errorf("broken VM config must not fall back silently: %q, %v", dn, err)
	}
}

func TestEntryOfAndAddRequestOf(t *testing.T) {
	req := NewLeafAddRequest(testTree, "kvm-005", "20121002T010000Z", "snapshot", "0")
	back := AddRequestOf(EntryOf(req))
	if !reflect.DeepEqual(back, req) {
		t.Fatalf("AddRequestOf(EntryOf(req)) =\n%+v\nwant\n%+v", back, req)
	}
	// An entry with only raw values (as some producers fill it) converts too.
	e := &ldap.Entry{DN: "cn=x", Attributes: []*ldap.EntryAttribute{{Name: "cn", ByteValues: [][]byte{[]byte("x")}}}}
	if r := AddRequestOf(e); len(r.Attributes) != 1 || r.Attributes[0].Vals[0] != "x" {
		t.Errorf("raw values: %+v", r)
	}
}
