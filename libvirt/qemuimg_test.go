package libvirt

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func qemuIOWrite(t *testing.T, path, cmd string) {
	t.Helper()
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", cmd, path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io %s: %v: %s", cmd, err, out)
	}
}

// The exported image helpers against the real qemu-img.
func TestImageHelpers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2"), filepath.Join(dir, "c.qcow2")
	for _, p := range []string{a, b} {
		if _, err := qemuImg(ctx, "create", "-q", "-f", "qcow2", p, "16M"); err != nil {
			t.Fatal(err)
		}
		qemuIOWrite(t, p, "write -P 0x11 1M 2M")
	}
	if eq, err := CompareImages(a, b); err != nil || !eq {
		t.Fatalf("equal images: %v %v", eq, err)
	}
	qemuIOWrite(t, b, "write -P 0x12 2M 4k")
	if eq, err := CompareImages(a, b); err != nil || eq {
		t.Fatalf("different images: %v %v", eq, err)
	}
	if err := createOverlay(ctx, a, "qcow2", c); err != nil {
		t.Fatal(err)
	}
	if im, err := ImageInfo(c); err != nil || im.BackingFile != a || im.Format != "qcow2" || im.VirtualSize != 16<<20 {
		t.Fatalf("overlay: %+v %v", im, err)
	}
	if chain, err := ImageChain(c); err != nil || len(chain) != 2 {
		t.Fatalf("chain: %+v %v", chain, err)
	}
	if eq, err := CompareImages(a, c); err != nil || !eq {
		t.Fatalf("overlay reads its backing file: %v %v", eq, err)
	}
	if err := rebaseStandalone(ctx, c); err != nil {
		t.Fatal(err)
	}
	os.Remove(a)
	if im, err := ImageInfo(c); err != nil || im.BackingFile != "" {
		t.Fatalf("rebased: %+v %v", im, err)
	}
	offlineReads(t, c, 0x11, 1<<20, 2<<20)
	if err := CheckImage(c); err != nil {
		t.Fatal(err)
	}
	if _, err := ImageInfo(a); !errors.Is(err, ErrMissingFile) {
		t.Fatalf("missing image: %v", err)
	}

	// Zero the first refcounts: qemu-img check finds corruptions.
	f, err := os.OpenFile(b, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 64)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	table := make([]byte, 8)
	if _, err := f.ReadAt(table, int64(binary.BigEndian.Uint64(hdr[48:56]))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 16), int64(binary.BigEndian.Uint64(table))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := CheckImage(b); !errors.Is(err, ErrCorruptImage) {
		t.Fatalf("corrupt image: %v", err)
	}
}
