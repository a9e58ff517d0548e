package testenv

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
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
