package format_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/format/formattest"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// Two backups of one disk share most chunks. Deleting the first and
// collecting frees exactly its own chunk, once the grace period is over; a
// chunk a running retain just stored is kept. Verify finds a damaged chunk,
// names the backup it breaks, and the next store writes it again.
func TestGarbageCollectionAndVerify(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "backup")
	img := testenv.Image(t, filepath.Join(dir, "disk.qcow2"), 16,
		"write -P 0x11 0M 4M", "write -P 0x12 4M 4M", "write -P 0x13 8M 4M")
	l := format.Layout{RetainRoot: dir, BackupRoot: root, Kind: "vm-persistent", Pool: "pool", VM: "vm-1"}
	s := l.ChunkStore(nil)
	backup := func(leaf string) format.Index {
		t.Helper()
		l.Leaf = leaf
		return formattest.BackUp(t, l, img)
	}
	first := backup("20240101T030000Z")
	if err := testenv.WriteImage(img, "write -P 0x22 0 4k"); err != nil {
		t.Fatal(err)
	}
	second := backup("20240102T030000Z")
	if first.Chunks[0] == second.Chunks[0] || first.Chunks[1] != second.Chunks[1] {
		t.Fatal("the backups do not share as expected")
	}
	refs, err := format.FindIndexes(root)
	if err != nil || len(refs) != 2 || refs[0].Disk != "disk.qcow2" || refs[0].VM != "vm-1" || refs[0].Leaf != "20240101T030000Z" {
		t.Fatalf("indexes: %+v %v", refs, err)
	}

	// A retain running now stored a chunk no index names yet.
	formattest.UnnamedChunk(t, s, []byte("a chunk of a retain still running"), 0)
	if err := os.RemoveAll(filepath.Join(root, "vm-persistent", "pool", "vm-1", "20240101T030000Z")); err != nil {
		t.Fatal(err)
	}
	r, err := format.CollectGarbage(ctx, s, root, time.Hour)
	if err != nil || r.Removed != 0 || r.Pending != 2 || r.Chunks != 5 || r.Indexes != 1 {
		t.Fatalf("within the grace period: %+v %v", r, err)
	}
	r, err = format.CollectGarbage(ctx, s, root, -time.Minute)
	if err != nil || r.Removed != 2 || r.Pending != 0 || r.RemovedBytes == 0 {
		t.Fatalf("after the grace period: %+v %v", r, err)
	}
	if s.Has(first.Chunks[0]) || !s.Has(second.Chunks[0]) || !s.Has(second.Chunks[1]) {
		t.Fatal("the collection removed the wrong chunks")
	}

	p := s.ChunkPath(second.Chunks[1]).String()
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o600)
	var bad []format.BadChunk
	checked := 0
	for part := range 3 {
		v, err := format.Verify(ctx, s, root, part, 3)
		if err != nil {
			t.Fatal(err)
		}
		checked += v.Checked
		bad = append(bad, v.Bad...)
	}
	// Found in its part; the parts after it report it moved aside.
	if checked != 3 || len(bad) == 0 || bad[0].ID != second.Chunks[1] || len(bad[0].Backups) != 1 ||
		bad[0].Backups[0] != "vm-1 20240102T030000Z disk.qcow2" || !strings.Contains(bad[0].Problem, "checksum") {
		t.Fatalf("verify: %d checked, %+v", checked, bad)
	}
	for _, b := range bad[1:] {
		if b.ID != bad[0].ID || !strings.Contains(b.Problem, "moved aside") {
			t.Fatalf("verify: %+v", bad)
		}
	}
	if s.Has(second.Chunks[1]) {
		t.Fatal("the damaged chunk is still in place")
	}
	if _, st, err := format.StoreImage(ctx, s, img, format.StoreOptions{}); err != nil || st.Written != 1 {
		t.Fatalf("the next store did not write the damaged chunk again: %+v %v", st, err)
	}
	if _, err := s.Get(second.Chunks[1]); err != nil {
		t.Fatal(err)
	}
}
