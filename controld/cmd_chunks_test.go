package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/format/formattest"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// A disk backed up in chunks is rebuilt by hand with the command, as qcow2
// and as raw; gc and verify run on the root; a damaged chunk fails verify.
func TestChunksCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	img := testenv.Image(t, filepath.Join(dir, "disk.qcow2"), 12, "write -P 0x5a 3M 2M")
	root := filepath.Join(dir, "backup")
	l := format.Layout{BackupRoot: root, Kind: "vm-persistent", Pool: "p", VM: "vm-1", Leaf: "20240101T030000Z"}
	formattest.BackUp(t, l, img)
	for _, f := range []string{"qcow2", "raw"} {
		out := filepath.Join(dir, "restored."+f)
		if err := runChunks([]string{"rebuild", "-format", f, l.BackupIndex(img).String(), out}); err != nil {
			t.Fatal(err)
		}
		if eq, err := format.CompareImages(ctx, img, out); err != nil || !eq {
			t.Fatalf("%s rebuilt by hand differs: %v %v", f, eq, err)
		}
	}
	if err := runChunks([]string{"gc", root}); err != nil {
		t.Fatal(err)
	}
	if err := runChunks([]string{"verify", root}); err != nil {
		t.Fatal(err)
	}
	chunks := formattest.ChunkFiles(t, root)
	if len(chunks) != 2 {
		t.Fatalf("chunks: %v", chunks)
	}
	b, _ := os.ReadFile(chunks[0])
	b[20] ^= 0xff
	os.WriteFile(chunks[0], b, 0o600)
	if err := runChunks([]string{"verify", root}); err == nil {
		t.Fatal("verify passed a damaged chunk")
	}
	jobs, err := format.ReadStoreJobs(l.ChunkStore(nil))
	if err != nil || jobs[format.JobGC].Failed() || !jobs[format.JobVerify].Failed() || len(jobs[format.JobVerify].Verify.Bad) != 1 {
		t.Fatalf("the store's records of the runs: %+v %v", jobs, err)
	}
	if err := runChunks([]string{"status", root}); err != nil {
		t.Fatal(err)
	}
	if err := runChunks([]string{"rebuild", filepath.Join(dir, "elsewhere.index"), filepath.Join(dir, "x")}); err == nil {
		t.Fatal("an index outside a backup root's layout was taken")
	}
}
