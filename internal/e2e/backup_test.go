package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

const leafLimit = 4 * time.Minute // a hang guard, not a speed assertion

// copyImage keeps a copy of a disk as it is now, to compare the backup with.
func copyImage(t *testing.T, src, dst string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
}

// writeLog records the controller's writes in order.
type writeLog struct {
	mu sync.Mutex
	w  []fsm.Write
}

func (l *writeLog) add(w fsm.Write) { l.mu.Lock(); l.w = append(l.w, w); l.mu.Unlock() }

// TestBackupBatch backs up three VMs as one batch through controld and
// nodebackupd: a running VM, a running VM with two disks, a shut-off VM.
func TestBackupBatch(t *testing.T) {
	s := newSite(t, env.root)
	one := s.addVM(true, 64, 0xab)
	two := s.addVM(true, 64, 0xcd, 0xce)
	off := s.addVM(false, 64, 0xef)
	vms := []*vm{one, two, off}

	before := filepath.Join(t.TempDir())
	for _, v := range vms {
		for _, d := range v.disks {
			copyImage(t, d.Path, filepath.Join(before, filepath.Base(d.Path)))
		}
	}

	var writes writeLog
	c := control.New(control.Options{Store: newStore(t), Log: quietLog(t).WithField("side", "control"), OnWrite: writes.add})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	startNode(t, s.host, env.hv)

	name, started := control.StartBackups(s.store, []string{one.name, two.name, off.name}, time.Now())
	for _, st := range started {
		if st.Err != nil {
			t.Fatal(st.Err)
		}
	}
	for _, st := range started {
		l := waitLeaf(t, s.store, st.DN, leafLimit, modeIs("finished"))
		if l.ReturnValue != 0 {
			t.Fatalf("%s finished with return value %d", st.VM, l.ReturnValue)
		}
	}

	for _, v := range vms {
		dir := filepath.Join(s.backup, "vm-persistent", "pool-a", v.name, name)
		want := []string{v.name + ".state." + name, v.name + ".xml." + name, v.name + ".ldif." + name}
		for _, d := range v.disks {
			want = append(want, filepath.Base(d.Path)+"."+name)
		}
		for _, f := range want {
			if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
				t.Fatalf("backup file %s missing or empty: %v", f, err)
			}
		}
		for _, d := range v.disks {
			eq, err := format.CompareImages(context.Background(), filepath.Join(before, filepath.Base(d.Path)), filepath.Join(dir, filepath.Base(d.Path)+"."+name))
			if err != nil || !eq {
				t.Fatalf("%s: backed-up image differs from the disk as it was (err %v)", d.Path, err)
			}
			noBacking(t, d.Path)
		}
		if _, err := os.Stat(filepath.Join(s.retain, "vm-persistent", "pool-a", v.name, name)); !os.IsNotExist(err) {
			t.Fatalf("%s: retain directory left behind (%v)", v.name, err)
		}
	}
	one.guestReads(t, "vda", 0xab)
	two.guestReads(t, "vda", 0xcd)
	two.guestReads(t, "vdb", 0xce)
	if !one.running(t) || !two.running(t) {
		t.Fatal("a running VM is not running after its backup")
	}
	if off.running(t) {
		t.Fatal("the shut-off VM was left running")
	}
	// The shut-off VM's state file is the placeholder, its XML the domain's.
	stateOff, _ := os.ReadFile(filepath.Join(s.backup, "vm-persistent", "pool-a", off.name, name, off.name+".state."+name))
	if len(stateOff) > 4096 {
		t.Fatalf("shut-off VM got a %d byte state file, want a placeholder", len(stateOff))
	}

	// The seed's order: every snapshot requested before any merge, and merge and
	// retain one VM at a time.
	writes.mu.Lock()
	defer writes.mu.Unlock()
	lastSnapshot, firstMerge := -1, len(writes.w)
	active := ""
	for i, w := range writes.w {
		switch w.To {
		case fsm.Snapshot:
			lastSnapshot = i
		case fsm.Merge:
			if i < firstMerge {
				firstMerge = i
			}
			if active != "" {
				t.Fatalf("merge of %s requested while %s is still merging or retaining", w.Key, active)
			}
			active = w.Key
		case fsm.Finished:
			if w.Key == active {
				active = ""
			}
		}
	}
	if lastSnapshot < 0 || firstMerge <= lastSnapshot {
		t.Fatalf("merge requested before all snapshots: writes %+v", writes.w)
	}
}

// TestSeedLDIF drives a backup with the seed's own LDIF steps, applied with
// ldapmodify as an operator would; only the node daemon runs.
func TestSeedLDIF(t *testing.T) {
	s := newSite(t, env.root)
	v := s.addVMNoConfig(true, 64, 0xab)
	startNode(t, s.host, env.hv)
	dn := s.store.Tree.VM(v.name)
	leaf := "ou=20121002T010000Z,ou=backup," + dn
	// step writes a leaf's state and mode with one change record, as the
	// manual's steps do.
	step := func(mode, state string) {
		t.Helper()
		if err := env.slapd.LDAPModify(`dn: ` + leaf + `
changetype: modify
replace: sstProvisioningState
sstProvisioningState: ` + state + `
-
replace: sstProvisioningMode
sstProvisioningMode: ` + mode + `
`); err != nil {
			t.Fatal(err)
		}
	}
	// Step 00, with 660 (the schema's INTEGER refuses 0660) and this site's paths.
	if err := env.slapd.LDAPAdd(`dn: ou=backup,` + dn + `
objectclass: top
objectclass: organizationalUnit
objectclass: sstVirtualizationBackupObjectClass
objectclass: sstCronObjectClass
ou: backup
description: This sub tree contains the backup plan for the virtual machine.
sstCronMinute: 0
sstCronHour: 3
sstCronDay: *
sstCronMonth: *
sstCronDayOfWeek: *
sstCronActive: TRUE
sstBackupRootDirectory: file://` + s.backup + `
sstBackupRetainDirectory: file://` + s.retain + `
sstBackupRamDiskLocation: file://` + s.ramdisk + `
sstVirtualizationDiskImageFormat: qcow2
sstVirtualizationDiskImageOwner: root
sstVirtualizationDiskImageGroup: vm-storage
sstVirtualizationDiskImagePermission: 660
sstBackupNumberOfIterations: 1
sstVirtualizationVirtualMachineForceStart: FALSE
sstVirtualizationBandwidthMerge: 0
`); err != nil {
		t.Fatal(err)
	}
	// Step 01
	if err := env.slapd.LDAPAdd(`dn: ` + leaf + `
objectclass: top
objectclass: sstProvisioning
objectclass: organizationalUnit
ou: 20121002T010000Z
sstProvisioningExecutionDate: 0
sstProvisioningMode: initialize
sstProvisioningReturnValue: 0
sstProvisioningState: 20121002T014513Z
`); err != nil {
		t.Fatal(err)
	}
	// Step 02, 03
	step("initialized", "20121002T010001Z")
	step("snapshot", "0")
	l := waitLeaf(t, s.store, leaf, leafLimit, modeIs("snapshotted"))
	if l.ReturnValue != 0 || l.State == "0" {
		t.Fatalf("snapshot: %+v", l)
	}
	v.guestReads(t, "vda", 0xab)
	// Step 06
	step("merge", "0")
	if l := waitLeaf(t, s.store, leaf, leafLimit, modeIs("merged")); l.ReturnValue != 0 {
		t.Fatalf("merge: %+v", l)
	}
	noBacking(t, v.disks[0].Path)
	// Step 09
	step("retain", "0")
	if l := waitLeaf(t, s.store, leaf, leafLimit, modeIs("retained")); l.ReturnValue != 0 {
		t.Fatalf("retain: %+v", l)
	}
	// Step 12
	step("finished", "20121002T012001Z")
	img := filepath.Join(s.backup, "vm-persistent", "pool-a", v.name, "20121002T010000Z", filepath.Base(v.disks[0].Path)+".20121002T010000Z")
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0xab 1M 8M", img).CombinedOutput()
	if err != nil || containsFail(out) {
		t.Fatalf("backed-up image does not hold the data: %v %s", err, out)
	}
	v.guestReads(t, "vda", 0xab)
}

func containsFail(out []byte) bool {
	return bytes.Contains(out, []byte("Pattern verification failed")) || bytes.Contains(out, []byte("failed"))
}

func waitFilled(v *vm) error { return testenv.WaitGuestFilled(v.spec, 2*time.Minute) }

// addVMNoConfig is addVM without the VM-level backup config (the test writes it).
func (s *site) addVMNoConfig(running bool, memMiB int, patterns ...byte) *vm {
	v := s.addVM(running, memMiB, patterns...)
	if err := s.store.Delete(s.store.Tree.VMBackup(v.name)); err != nil {
		s.t.Fatal(err)
	}
	return v
}

// request writes an imperative mode on a new or existing leaf, as controld or an
// operator would.
func request(t *testing.T, store *ldapschema.Store, vmName, leafName string, mode fsm.Mode) string {
	t.Helper()
	if err := store.EnsureBackupEntry(vmName); err != nil {
		t.Fatal(err)
	}
	dn := "ou=" + leafName + "," + store.Tree.VMBackup(vmName)
	req := ldapschema.NewLeafAddRequest(store.Tree, vmName, leafName, string(mode), "0")
	req.DN = dn
	if err := store.Add(req); err != nil {
		t.Fatal(err)
	}
	return dn
}

// TestBadInput: each case is refused with the original's return code while the
// VM keeps running on its own disks, reading its own data.
func TestBadInput(t *testing.T) {
	cases := []struct {
		name  string
		rc    ldapschema.ReturnCode
		setup func(t *testing.T, s *site) (vmName string, v *vm, leaf string)
	}{
		{"unknown VM", ldapschema.RCCannotFindMachine, func(t *testing.T, s *site) (string, *vm, string) {
			name := unique("ghost")
			s.addEntries(name, nil, s.config())
			return name, nil, "20240101T000000Z"
		}},
		{"disks differ from the domain", ldapschema.RCBackendXMLInconsistent, func(t *testing.T, s *site) (string, *vm, string) {
			v := s.addVM(true, 64, 0xab)
			dn := s.store.Tree.Disk(v.name, "vda")
			if err := s.store.Update(dn, "", map[string][]string{ldapschema.AttrSourceFile: {filepath.Join(s.images, "other.qcow2")}}); err != nil {
				t.Fatal(err)
			}
			return v.name, v, "20240101T000000Z"
		}},
		{"backup root missing", ldapschema.RCBackupRootMissing, func(t *testing.T, s *site) (string, *vm, string) {
			v := s.addVM(true, 64, 0xab)
			if err := s.store.Update(s.store.Tree.VMBackup(v.name), "", map[string][]string{
				ldapschema.AttrBackupRootDirectory: {"file://" + filepath.Join(s.backup, "nope")}}); err != nil {
				t.Fatal(err)
			}
			return v.name, v, "20240101T000000Z"
		}},
		{"disk path leaves its directory", ldapschema.RCUnsupportedParameter, func(t *testing.T, s *site) (string, *vm, string) {
			v := s.addVM(true, 64, 0xab)
			if err := s.store.Update(s.store.Tree.Disk(v.name, "vda"), "", map[string][]string{
				ldapschema.AttrSourceFile: {s.images + "/../pool-a/" + filepath.Base(v.disks[0].Path)}}); err != nil {
				t.Fatal(err)
			}
			return v.name, v, "20240101T000000Z"
		}},
		{"malformed leaf name", ldapschema.RCWrongState, func(t *testing.T, s *site) (string, *vm, string) {
			v := s.addVM(true, 64, 0xab)
			return v.name, v, "yesterday"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t, env.root)
			startNode(t, s.host, env.hv)
			vmName, v, leafName := tc.setup(t, s)
			dn := request(t, s.store, vmName, leafName, fsm.Snapshot)
			l := waitLeafRaw(t, s.store, dn, func(mode string, rv int) bool { return mode == "snapshotted" })
			if l != int(tc.rc) {
				t.Fatalf("return value %d, want %d (%s)", l, tc.rc, tc.rc)
			}
			if v != nil {
				if !v.running(t) {
					t.Fatal("VM not running after a refused snapshot")
				}
				v.guestReads(t, "vda", 0xab)
				noBacking(t, v.disks[0].Path)
			}
		})
	}
}

// TestNoRoomForState: neither the RAM disk nor the retain location can hold the
// state file: 47, and the VM runs on.
func TestNoRoomForState(t *testing.T) {
	s := newSite(t, env.small)
	v := s.addVM(true, 96, 0xab)
	if err := waitFilled(v); err != nil {
		t.Fatal(err)
	}
	startNode(t, s.host, env.hv)
	dn := request(t, s.store, v.name, "20240101T000000Z", fsm.Snapshot)
	rv := waitLeafRaw(t, s.store, dn, func(mode string, rv int) bool { return mode == "snapshotted" })
	if rv != int(ldapschema.RCNoSpace) {
		t.Fatalf("return value %d, want 47", rv)
	}
	if !v.running(t) {
		t.Fatal("VM stopped")
	}
	v.guestReads(t, "vda", 0xab)
	noBacking(t, v.disks[0].Path)
}

// waitLeafRaw reads mode and return value without parsing the DN (malformed names).
func waitLeafRaw(t *testing.T, store *ldapschema.Store, dn string, cond func(string, int) bool) int {
	t.Helper()
	deadline := time.Now().Add(leafLimit)
	for time.Now().Before(deadline) {
		e, err := store.Get(dn, "*")
		if err == nil {
			mode := e.GetAttributeValue(ldapschema.AttrMode)
			rv := atoi(e.GetAttributeValue(ldapschema.AttrReturnValue))
			if cond(mode, rv) {
				return rv
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("leaf %s never reached the expected mode", dn)
	return -1
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// countingHV counts the snapshots a hypervisor is asked for.
type countingHV struct {
	*libvirt.Hypervisor
	snapshots *atomic.Int64
}

func (c countingHV) Snapshot(ctx context.Context, req libvirt.SnapshotRequest) (libvirt.SnapshotResult, error) {
	c.snapshots.Add(1)
	return c.Hypervisor.Snapshot(ctx, req)
}

// TestTwoNodesRace: two node daemons for one host race for every leaf; exactly
// one does each piece of work.
func TestTwoNodesRace(t *testing.T) {
	s := newSite(t, env.root)
	v := s.addVM(false, 64, 0xab)
	var n atomic.Int64
	startNode(t, s.host, countingHV{env.hv, &n})
	startNode(t, s.host, countingHV{env.hv, &n})
	startControl(t)
	for i := 0; i < 3; i++ {
		name, started := control.StartBackups(s.store, []string{v.name}, time.Date(2024, 1, 1, 0, 0, i, 0, time.UTC))
		if started[0].Err != nil {
			t.Fatal(started[0].Err)
		}
		l := waitLeaf(t, s.store, started[0].DN, leafLimit, modeIs("finished"))
		if l.ReturnValue != 0 {
			t.Fatalf("round %d (%s): return value %d", i, name, l.ReturnValue)
		}
		if got := n.Load(); got != int64(i+1) {
			t.Fatalf("after %d backups the hypervisor was asked for %d snapshots", i+1, got)
		}
	}
}
