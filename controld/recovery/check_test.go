package recovery

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheck: leaves whose files are gone or broken, files no leaf
// knows and strays are all listed; leaves still in work are not checked.
func TestCheck(t *testing.T) {
	s := newSite(t, 5)
	store, tree, root := s.store, s.store.Tree, s.root
	mk := func(leaf string) fakeBackup {
		return s.backup("vm-k", leaf, "vda")
	}
	ok := mk("20240101T030000Z")
	addSaved(t, store, ok)
	addLeaf(t, store, "vm-k", ok.leaf, "finished", 0)

	gone := mk("20240102T030000Z")
	os.RemoveAll(gone.dir())
	addLeaf(t, store, "vm-k", gone.leaf, "finished", 0)

	damaged := mk("20240103T030000Z")
	os.WriteFile(damaged.file("vm-k-vda.qcow2"), []byte("bad"), 0o640)
	addLeaf(t, store, "vm-k", damaged.leaf, "finished", 0)

	busy := mk("20240104T030000Z")
	os.Remove(busy.file("vm-k.xml"))
	addLeaf(t, store, "vm-k", busy.leaf, "retaining", 0)

	unknown := mk("20240105T030000Z")
	os.MkdirAll(filepath.Join(root, "lost+found"), 0o700)

	// Scanning another root does not hide the leaves' own files.
	other := t.TempDir()
	r, err := Check(context.Background(), store, scanRoots(t, other, root), fakeImages{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Checked != 3 {
		t.Fatalf("checked %d leaves, want 3", r.Checked)
	}
	var missing []string
	for _, l := range r.LeavesWithoutFiles {
		missing = append(missing, l.Leaf+": "+strings.Join(l.Problems, "; "))
	}
	if len(missing) != 2 || !strings.HasPrefix(missing[0], gone.leaf+": files gone") ||
		!strings.HasPrefix(missing[1], damaged.leaf+": disk vda") {
		t.Fatalf("leaves without files: %q", missing)
	}
	if len(r.FilesWithoutLeaf) != 1 || r.FilesWithoutLeaf[0].Leaf != unknown.leaf {
		t.Fatalf("files without a leaf: %+v", r.FilesWithoutLeaf)
	}
	if len(r.Strays) != 1 || filepath.Base(r.Strays[0].Path) != "lost+found" {
		t.Fatalf("strays: %+v", r.Strays)
	}
	if len(r.Skipped) != 1 || r.Skipped[0].Leaf != busy.leaf {
		t.Fatalf("skipped: %+v", r.Skipped)
	}
	if r.Clean() {
		t.Fatal("a check with findings reads as clean")
	}

	// Once recovered and the broken leaves removed, both sides agree.
	for _, l := range []string{gone.leaf, damaged.leaf, busy.leaf} {
		store.Delete(tree.Leaf("vm-k", l))
	}
	os.RemoveAll(damaged.dir())
	os.RemoveAll(busy.dir())
	os.RemoveAll(filepath.Join(root, "lost+found"))
	scan := scanRoots(t, root)
	if _, err := Import(store, validate(t, store, scan, false), time.Now()); err != nil {
		t.Fatal(err)
	}
	r, err = Check(context.Background(), store, scanRoots(t, root), fakeImages{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() || r.Checked != 2 {
		t.Fatalf("after recovery: %+v", r)
	}
}
