package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/format"
)

// A disk backed up in chunks is rebuilt by hand with the command, as qcow2
// and as raw; gc and verify run on the root; a damaged chunk fails verify.
func TestChunksCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	for _, c := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", img, "12M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 3M 2M", img},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	root := filepath.Join(dir, "backup")
	l := format.Layout{BackupRoot: root, Kind: "vm-persistent", Pool: "p", VM: "vm-1", Leaf: "20240101T030000Z"}
	if err := os.MkdirAll(l.BackupDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	x, _, err := format.StoreImage(ctx, l.ChunkStore(nil), img, format.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := format.WriteIndex(nil, l.BackupIndex(img), x, 0o600); err != nil {
		t.Fatal(err)
	}
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
	chunks, _ := filepath.Glob(filepath.Join(root, format.ChunkStoreDir, "*", "*"))
	if len(chunks) != 2 {
		t.Fatalf("chunks: %v", chunks)
	}
	b, _ := os.ReadFile(chunks[0])
	b[20] ^= 0xff
	os.WriteFile(chunks[0], b, 0o600)
	if err := runChunks([]string{"verify", root}); err == nil {
		t.Fatal("verify passed a damaged chunk")
	}
	if err := runChunks([]string{"rebuild", filepath.Join(dir, "elsewhere.index"), filepath.Join(dir, "x")}); err == nil {
		t.Fatal("an index outside a backup root's layout was taken")
	}
}
