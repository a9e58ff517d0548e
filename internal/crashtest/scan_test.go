package crashtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// TestLeftoverScan: the scan behind every crash point finds each kind of
// leftover, names it, and blames only the VM it belongs to.
func TestLeftoverScan(t *testing.T) {
	root := t.TempDir()
	w := &world{
		images: filepath.Join(root, "images", "pool-a"), retain: filepath.Join(root, "retain"),
		backup: filepath.Join(root, "backup"), ramdisk: filepath.Join(root, "ramdisk"),
	}
	mk := func(path string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vm := func(name string) *testVM {
		v := &testVM{name: name}
		for _, target := range []string{"vda", "vdb"} {
			p := filepath.Join(w.images, name+"-"+target+".qcow2")
			v.disks = append(v.disks, testenv.DiskSpec{Target: target, Path: p})
			mk(p)
		}
		mk(filepath.Join(w.images, name+"-boot.img"))
		mk(filepath.Join(w.images, name+"-serial.log"))
		// What a finished backup leaves, which is no leftover.
		leaf := filepath.Join(w.backup, "vm-persistent", "pool-a", name, "20240101T000000Z")
		mk(filepath.Join(leaf, name+".state.20240101T000000Z"))
		if err := os.MkdirAll(filepath.Join(w.retain, "vm-persistent", "pool-a", name), 0o755); err != nil {
			t.Fatal(err)
		}
		return v
	}
	a, b, gone := vm("crash-b1"), vm("crash-b12"), vm("crash-b2")
	gone.abandoned = true
	w.vms = []*testVM{a, b, gone}
	os.MkdirAll(w.ramdisk, 0o755)
	if got := w.leftovers(nil); len(got) != 0 {
		t.Fatalf("a clean site has leftovers: %q", got)
	}

	leaf := filepath.Join(w.retain, "vm-persistent", "pool-a", "crash-b1", "20240101T000000Z")
	mk(filepath.Join(leaf, "crash-b1-vda.qcow2"))
	if err := os.MkdirAll(filepath.Join(w.retain, "vm-persistent", "pool-a", "crash-b12", "20240101T000000Z"), 0o755); err != nil {
		t.Fatal(err)
	}
	mk(filepath.Join(w.ramdisk, "crash-b1.state"))
	mk(filepath.Join(w.images, "crash-b1-vda.qcow2.pre-restore"))
	mk(filepath.Join(w.images, "crash-b12-vdb.qcow2.overlay"))
	mk(filepath.Join(w.images, "stray.qcow2"))
	mk(filepath.Join(w.backup, "vm-persistent", "pool-a", "crash-b1", "20240101T000000Z", "crash-b1-vda.qcow2.20240101T000000Z.partial"))
	// A crashed writer's temporary chunk is the garbage collection's.
	mk(filepath.Join(w.backup, ".chunks", "19fd", "19fd2e93.4242-1.tmp"))
	// An abandoned VM's files were reported by its own point.
	mk(filepath.Join(w.ramdisk, "crash-b2.state"))
	mk(filepath.Join(w.images, "crash-b2-vda.qcow2.pre-restore"))

	want := map[string][]string{
		"crash-b1": {
			"retain: leaf directory crash-b1/20240101T000000Z left (1 file(s))",
			"RAM disk: crash-b1.state",
			"images: crash-b1-vda.qcow2.pre-restore",
			"backup: vm-persistent/pool-a/crash-b1/20240101T000000Z/crash-b1-vda.qcow2.20240101T000000Z.partial",
		},
		"crash-b12": {
			"retain: leaf directory crash-b12/20240101T000000Z left (0 file(s))",
			"images: crash-b12-vdb.qcow2.overlay",
		},
	}
	for _, v := range []*testVM{a, b} {
		got := strings.Join(w.leftovers(v), "\n")
		for _, s := range want[v.name] {
			if !strings.Contains(got, s) {
				t.Errorf("scan for %s misses %q; found:\n%s", v.name, s, got)
			}
		}
		if strings.Contains(got, "stray") || strings.Contains(got, "crash-b2") || strings.Contains(got, ".chunks") {
			t.Errorf("scan for %s blames another VM's or nobody's file:\n%s", v.name, got)
		}
	}
	all := strings.Join(w.leftovers(nil), "\n")
	if !strings.Contains(all, "images: stray.qcow2") {
		t.Errorf("the full scan misses a file of no VM:\n%s", all)
	}
	if strings.Contains(all, "crash-b2") || strings.Contains(all, ".chunks") {
		t.Errorf("the full scan reports an abandoned VM or the chunk store's temporary file:\n%s", all)
	}
}
