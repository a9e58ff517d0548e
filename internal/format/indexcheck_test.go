package format

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// A saved state kept in chunks is read back through its index where its
// header and its QEMU stream lie, across chunk boundaries; the chunks an
// index names are looked up, each once, and the missing ones named.
func TestStoredStateAndChunks(t *testing.T) {
	ctx := context.Background()
	dir, s := tempStore(t)
	// An XML of 3 MiB puts the QEMU stream chunks after the header.
	xml := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{9}).Read(xml)
	h := make([]byte, saveHeader)
	copy(h, saveMagic)
	binary.LittleEndian.PutUint32(h[16:], 2)
	binary.LittleEndian.PutUint32(h[20:], uint32(len(xml)))
	image := append(append(append(h, xml...), qemuStream...), make([]byte, 1<<20)...)
	store := func(name string, b []byte) FileIndex {
		t.Helper()
		x, _, err := StoreFile(ctx, s, writeFile(t, dir, name, b))
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	x := store("vm.state", image)
	if len(x.Chunks) < 3 {
		t.Fatalf("%d chunks: the test needs the stream beyond the first", len(x.Chunks))
	}
	if k, err := ReadStoredState(s, x); k != StateSaved || err != nil {
		t.Fatalf("stored save image: %q %v", k, err)
	}
	f := &storedFile{store: s, x: x}
	for _, off := range []int64{0, int64(x.Chunks[0].Len) - 3, int64(len(image)) - 10, 2 << 20} {
		got := make([]byte, 7)
		n, err := f.ReadAt(got, off)
		want := image[off:min(off+7, int64(len(image)))]
		if !bytes.Equal(got[:n], want) || (n < 7) != (err != nil) {
			t.Fatalf("at %d: %q %v, want %q", off, got[:n], err, want)
		}
	}
	if k, err := ReadStoredState(s, store("off.state", []byte(Placeholder))); k != StatePlaceholder || err != nil {
		t.Fatalf("stored placeholder: %q %v", k, err)
	}
	if _, err := ReadStoredState(s, store("cut.state", image[:saveHeader+100])); err == nil {
		t.Fatal("a save image cut short passes")
	}

	ids := append(x.IDs(), x.IDs()[0], zeroID)
	sizes, missing := s.StoredChunks(ids)
	if len(sizes) != len(x.Chunks) || len(missing) != 0 {
		t.Fatalf("%d chunks found, %d missing; want %d and none", len(sizes), len(missing), len(x.Chunks))
	}
	// The chunk that holds the start of the QEMU stream.
	var gone ChunkID
	for i, end := 0, int64(0); i < len(x.Chunks); i++ {
		if end += int64(x.Chunks[i].Len); end > int64(saveHeader+len(xml)) {
			gone = x.Chunks[i].ID
			break
		}
	}
	if fi, _ := os.Stat(s.ChunkPath(gone).String()); fi.Size() != sizes[gone] {
		t.Fatalf("size %d of a chunk file of %d", sizes[gone], fi.Size())
	}
	os.Remove(s.ChunkPath(gone).String())
	if sizes, missing = s.StoredChunks(ids); len(sizes) != len(x.Chunks)-1 || !slices.Equal(missing, []ChunkID{gone}) {
		t.Fatalf("after removing %s: %d found, missing %v", gone, len(sizes), missing)
	}
	if _, err := ReadStoredState(s, x); err == nil {
		t.Fatal("a state whose chunk is missing reads")
	}
}
