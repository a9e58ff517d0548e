package libvirt

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lv "libvirt.org/go/libvirt"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

type testVM struct {
	spec   testenv.VMSpec
	dir    string
	retain string
}

// newVM defines a VM named name whose disks (vda, vdb...) hold the given
// patterns, in dir (a fresh temp dir if empty), and waits until a running
// one has filled its RAM.
func newVM(t testing.TB, name, dir string, memMiB int, running bool, patterns ...byte) *testVM {
	t.Helper()
	v := planVM(t, name, dir, memMiB, running, patterns...)
	v.define(t)
	return v
}

// planVM is newVM before the VM is defined, for a test to change its spec.
func planVM(t testing.TB, name, dir string, memMiB int, running bool, patterns ...byte) *testVM {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	v := &testVM{dir: dir, retain: filepath.Join(dir, "retain")}
	v.spec = testenv.VMSpec{Name: name, MemoryMiB: memMiB, Running: running}
	for i, p := range patterns {
		target := "vd" + string(rune('a'+i))
		v.spec.Disks = append(v.spec.Disks, testenv.DiskSpec{
			Target: target, Path: filepath.Join(dir, name+"-"+target+".qcow2"), SizeMiB: 32, Pattern: p})
	}
	return v
}

// newVMWithDisk is newVM with one disk at a file name of the test's choice.
func newVMWithDisk(t testing.TB, name, file string, running bool, pattern byte) *testVM {
	t.Helper()
	dir := t.TempDir()
	v := &testVM{dir: dir, retain: filepath.Join(dir, "retain")}
	v.spec = testenv.VMSpec{Name: name, MemoryMiB: 64, Running: running, Disks: []testenv.DiskSpec{
		{Target: "vda", Path: filepath.Join(dir, file), SizeMiB: 32, Pattern: pattern}}}
	v.define(t)
	return v
}

func (v *testVM) define(t testing.TB) {
	t.Helper()
	name, running := v.spec.Name, v.spec.Running
	if err := os.MkdirAll(v.retain, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := testenv.DefineVM(lvd.URI, v.spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := testenv.RemoveVM(lvd.URI, name); err != nil {
			t.Errorf("remove %s: %v", name, err)
		}
	})
	if running {
		if err := testenv.WaitGuestFilled(v.spec, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
}

func (v *testVM) disks() []Disk {
	var ds []Disk
	for _, d := range v.spec.Disks {
		ds = append(ds, Disk{Target: d.Target, Source: d.Path})
	}
	return ds
}

// request asks for a snapshot into v.retain (beneath v.dir), with the
// state on ramDisk if not empty, and the intent record beside the disks.
func (v *testVM) request(ramDisk string) SnapshotRequest {
	retain, err := hostio.Beneath(v.dir, v.retain)
	if err != nil {
		panic(err)
	}
	var ram hostio.Path
	if ramDisk != "" {
		ram = hostio.In(ramDisk)
	}
	return SnapshotRequest{
		Domain: v.spec.Name, Disks: v.disks(), RAMDisk: ram, RetainDir: retain,
		StateName: v.spec.Name + ".state", XMLName: v.spec.Name + ".xml",
		Ownership: Ownership{Perm: 0o640},
		Record:    v.record(nil),
	}
}

// record is the snapshot's intent record, its saves passing seam.
func (v *testVM) record(seam *hostio.Seam) hostio.Record {
	return hostio.Record{Path: hostio.In(v.dir).MustJoin("intent", "snapshot.json"), Seam: seam}
}

// guestReads checks what the guest reads on a disk, not what a tool says.
func (v *testVM) guestReads(t *testing.T, target string, pattern byte, off, length int64) {
	t.Helper()
	if err := testenv.VerifyGuestPattern(lvd.URI, lvd.LogDir, v.spec.Name, target, pattern, off, length); err != nil {
		t.Fatal(err)
	}
}

// guestReadsOriginal checks every disk's pattern from the guest's side.
func (v *testVM) guestReadsOriginal(t *testing.T) {
	t.Helper()
	for _, d := range v.spec.Disks {
		v.guestReads(t, d.Target, d.Pattern, testenv.PatternOffset, testenv.PatternLength)
	}
}

func (v *testVM) guestWrites(t *testing.T, target string, pattern byte, off, length int64) {
	t.Helper()
	if err := testenv.WriteGuestPattern(lvd.URI, lvd.LogDir, v.spec.Name, target, pattern, off, length); err != nil {
		t.Fatal(err)
	}
}

// state returns whether the domain runs, failing the test on error.
func (v *testVM) running(t *testing.T, h *Hypervisor) bool {
	t.Helper()
	info, err := h.Domain(v.spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	return info.Running
}

// onOwnDisks checks that nothing of a refused or rolled-back Snapshot is
// left: the VM in its state, each disk standalone at its path, the retain
// directory empty, the guest reading its data.
func (v *testVM) onOwnDisks(t *testing.T, h *Hypervisor, wantRunning bool) {
	t.Helper()
	info, err := h.Domain(v.spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if info.Running != wantRunning || (wantRunning && info.State != "running") {
		t.Fatalf("%s: running=%v state %q, want running=%v", v.spec.Name, info.Running, info.State, wantRunning)
	}
	for _, d := range v.spec.Disks {
		im, err := format.ImageInfo(context.Background(), d.Path)
		if err != nil {
			t.Fatal(err)
		}
		if im.BackingFile != "" {
			t.Fatalf("%s is still backed by %s", d.Path, im.BackingFile)
		}
	}
	if ents, _ := os.ReadDir(v.retain); len(ents) != 0 {
		t.Fatalf("retain directory not empty: %v", ents)
	}
	if hostio.Exists(v.record(nil).Path) {
		t.Fatal("the intent record is still open")
	}
	if wantRunning {
		v.guestReadsOriginal(t)
	} else {
		for _, d := range v.spec.Disks {
			offlineReads(t, d.Path, d.Pattern, testenv.PatternOffset, testenv.PatternLength)
		}
	}
}

// offlineReads checks an image's data with qemu-io, reading through its
// backing chain as a guest would.
func offlineReads(t *testing.T, path string, pattern byte, off, length int64) {
	t.Helper()
	cmd := fmt.Sprintf("read -P 0x%02x %d %d", pattern, off, length)
	out, err := exec.Command("qemu-io", "-r", "-U", "-f", "qcow2", "-c", cmd, path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Pattern verification failed") ||
		!strings.Contains(string(out), fmt.Sprintf("read %d/%d bytes", length, length)) {
		t.Fatalf("%s on %s: %v\n%s", cmd, path, err, out)
	}
}

// openH returns the Hypervisor the tests share, as the daemon shares one.
func openH(testing.TB) *Hypervisor { return sharedH }

// ownH opens a Hypervisor of the test's own, for tests that set a seam.
func ownH(t testing.TB) *Hypervisor {
	t.Helper()
	h, err := Open(lvd.URI)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot takes a snapshot that must succeed.
func snapshot(t testing.TB, h *Hypervisor, req SnapshotRequest) SnapshotResult {
	t.Helper()
	res, err := h.Snapshot(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// seedLayout checks the files a Snapshot of a running VM with memMiB of
// filled RAM leaves: a real state image moved off the RAM disk (0600), the
// XML without backingStore, each disk an overlay of its retained image at
// the configured permission.
func (v *testVM) seedLayout(t *testing.T, res SnapshotResult, memMiB int64) {
	t.Helper()
	name := v.spec.Name
	if !format.IsSaveImage(res.StateFile) || res.StateFile != filepath.Join(v.retain, name+".state") {
		t.Fatalf("state file %s is not a save image", res.StateFile)
	}
	if fi, _ := os.Stat(res.StateFile); fi.Size() < (memMiB-28)<<20 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file of %d bytes, mode %v, for a %d MiB VM that filled its RAM", fi.Size(), fi.Mode(), memMiB)
	}
	if _, err := os.Stat(filepath.Join(ramDisk, name+".state")); !os.IsNotExist(err) {
		t.Fatalf("state file left on the RAM disk: %v", err)
	}
	x, err := os.ReadFile(res.XMLFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := format.ParseDomainXML(string(x))
	if err != nil || strings.Contains(string(x), "backingStore") || len(d.Disks) != len(v.spec.Disks) {
		t.Fatalf("saved XML: %v\n%s", err, x)
	}
	for i, disk := range v.spec.Disks {
		retained := filepath.Join(v.retain, filepath.Base(disk.Path))
		if d.Disks[i].Source != disk.Path || res.Disks[i] != (RetainedDisk{Target: disk.Target, Source: disk.Path, Retained: retained}) {
			t.Fatalf("disk %d: saved %+v, result %+v", i, d.Disks[i], res.Disks[i])
		}
		im, err := format.ImageInfo(context.Background(), disk.Path)
		if err != nil || im.BackingFile != retained {
			t.Fatalf("overlay %+v %v", im, err)
		}
		if fi, _ := os.Stat(disk.Path); fi.Mode().Perm() != 0o640 {
			t.Fatalf("overlay mode %v", fi.Mode())
		}
		if _, err := os.Stat(disk.Path + interimSuffix); !os.IsNotExist(err) {
			t.Fatalf("interim overlay left: %v", err)
		}
	}
	v.definedOnOwnPaths(t)
}

// definedOnOwnPaths checks that the domain's definition (what it boots
// from next time) names each disk at its own path, as the seed's restore
// leaves it.
func (v *testVM) definedOnOwnPaths(t *testing.T) {
	t.Helper()
	var x string
	err := sharedH.withDomain(v.spec.Name, func(_ *lv.Connect, d *lv.Domain) error {
		var err error
		x, err = d.GetXMLDesc(lv.DOMAIN_XML_INACTIVE)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := format.ParseDomainXML(x)
	if err != nil || len(d.Disks) != len(v.spec.Disks) {
		t.Fatalf("definition: %v\n%s", err, x)
	}
	for i, disk := range v.spec.Disks {
		if d.Disks[i].Source != disk.Path {
			t.Fatalf("defined on %s, not %s", d.Disks[i].Source, disk.Path)
		}
	}
}
