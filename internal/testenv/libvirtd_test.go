package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	lv "libvirt.org/go/libvirt"
)

func TestBootSector(t *testing.T) {
	for _, dirty := range []bool{false, true} {
		b := bootSector(dirty)
		if len(b) != 512 || b[510] != 0x55 || b[511] != 0xaa {
			t.Fatalf("boot sector: %d bytes, signature %#x %#x", len(b), b[510], b[511])
		}
	}
	if len(bootCode)+len(dirtyLoop) > 510 {
		t.Fatalf("boot code is %d bytes, more than fits", len(bootCode)+len(dirtyLoop))
	}
	// The dirty guest's jump replaces exactly the halt loop.
	if !bytes.Equal(bootCode[haltAt:haltAt+3], []byte{0xf4, 0xeb, 0xfd}) {
		t.Fatalf("no halt loop at %#x: % x", haltAt, bootCode[haltAt:haltAt+3])
	}
	if target := haltAt + 2 + int(int8(dirtyJump[1])); target != len(bootCode) {
		t.Fatalf("the dirty guest jumps to %#x, its loop is at %#x", target, len(bootCode))
	}
}

func TestParseInfoBlock(t *testing.T) {
	info := "libvirt-2-format: /x/boot.img (raw, read-only)\r\n" +
		"    Attached to:      fdc0-0-0\r\n" +
		"    Cache mode:       writeback\r\n\r\n" +
		"libvirt-3-format: /x/d1.qcow2 (qcow2)\r\n" +
		"    Attached to:      /machine/peripheral/virtio-disk0/virtio-backend\r\n" +
		"    Cache mode:       writeback\r\n" +
		"    Backing file:     /r/d1.qcow2 (chain depth: 1)\r\n"
	node, dev := parseInfoBlock(info, "virtio-disk0")
	if node != "libvirt-3-format" || dev != "/machine/peripheral/virtio-disk0/virtio-backend" {
		t.Fatalf("got %q %q", node, dev)
	}
	if node, _ := parseInfoBlock(info, "virtio-disk1"); node != "" {
		t.Fatalf("found %q for a disk that is not there", node)
	}
}

// TestLibvirtdAndGuest runs the whole harness: a private libvirtd, a VM that
// fills its RAM, guest-visible reads that must fail on wrong data, and a
// libvirtd crash and restart that the VM survives.
func TestLibvirtdAndGuest(t *testing.T) {
	dir, err := os.MkdirTemp("", "lvd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d, err := StartLibvirtd(LibvirtdOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
	})
	if !strings.HasPrefix(d.URI, "qemu:///system?socket=") {
		t.Fatalf("URI %q", d.URI)
	}
	spec := VMSpec{Name: "h1", MemoryMiB: 64, Running: true,
		Disks: []DiskSpec{{Target: "vda", Path: filepath.Join(dir, "h1.qcow2"), SizeMiB: 32, Pattern: 0xab}}}
	if err := DefineVM(d.URI, spec); err != nil {
		t.Fatal(err)
	}
	if err := WaitGuestFilled(spec, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := VerifyGuestPattern(d.URI, d.LogDir, "h1", "vda", 0xab, PatternOffset, PatternLength); err != nil {
		t.Fatal(err)
	}
	// The check must be able to fail: other data, and a range never written.
	if err := VerifyGuestPattern(d.URI, d.LogDir, "h1", "vda", 0xac, PatternOffset, 4096); err == nil {
		t.Fatal("pattern 0xac verified on a disk holding 0xab")
	}
	if err := VerifyGuestPattern(d.URI, d.LogDir, "h1", "vda", 0xab, 0, 4096); err == nil {
		t.Fatal("pattern verified on a range never written")
	}
	if err := WriteGuestPattern(d.URI, d.LogDir, "h1", "vda", 0x5c, 20<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := VerifyGuestPattern(d.URI, d.LogDir, "h1", "vda", 0x5c, 20<<20, 1<<20); err != nil {
		t.Fatal(err)
	}

	// A crash of libvirtd leaves QEMU running; the next libvirtd takes it back.
	d.Kill()
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := VerifyGuestPattern(d.URI, d.LogDir, "h1", "vda", 0x5c, 20<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	c, err := lv.NewConnect(d.URI)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dom, err := c.LookupDomainByName("h1")
	if err != nil {
		t.Fatal(err)
	}
	defer dom.Free()
	if st, _, err := dom.GetState(); err != nil || st != lv.DOMAIN_RUNNING {
		t.Fatalf("after libvirtd restart: state %v, %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(d.LogDir, "qemu", "h1.log")); err != nil {
		t.Fatal(err)
	}
}

// A test binary that dies without Stop (past its -timeout it panics past
// every cleanup) leaves no QEMU and no libvirtd running: the reaper ends
// them. The binary is this one, run again as reaperChild.
func TestDeadTestBinaryLeavesNoQEMU(t *testing.T) {
	if dir := os.Getenv("TESTENV_REAPER_DIR"); dir != "" {
		reaperChild(t, dir)
	}
	dir, err := os.MkdirTemp("", "lvd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command(os.Args[0], "-test.run=^TestDeadTestBinaryLeavesNoQEMU$")
	cmd.Env = append(os.Environ(), "TESTENV_REAPER_DIR="+dir)
	out, err := cmd.Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	if len(pids) != 2 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range pids {
		for syscall.Kill(p, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, p := range pids {
		if syscall.Kill(p, 0) == nil {
			t.Errorf("process %d of the dead binary still runs", p)
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// reaperChild starts libvirtd and a guest, prints their pids and exits as
// a timed-out test binary does: without any cleanup.
func reaperChild(t *testing.T, dir string) {
	d, err := StartLibvirtd(LibvirtdOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	spec := VMSpec{Name: "orphan", MemoryMiB: 32, Running: true,
		Disks: []DiskSpec{{Target: "vda", Path: filepath.Join(dir, "orphan.qcow2"), SizeMiB: 8}}}
	if err := DefineVM(d.URI, spec); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"run/qemu/orphan.pid", "run/libvirtd.pid"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(strings.TrimSpace(string(b)))
	}
	os.Exit(2)
}
