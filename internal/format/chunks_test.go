package format

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

func TestChunkRoundTripAndCorruption(t *testing.T) {
	dir := t.TempDir()
	s := &ChunkStore{Dir: hostio.In(dir)}
	data := bytes.Repeat([]byte("stoney chunk "), 100000)
	id := ChunkID(sha256.Sum256(data))
	if wrote, err := s.Put(id, data); err != nil || !wrote {
		t.Fatalf("first put: %v %v", wrote, err)
	}
	if wrote, err := s.Put(id, data); err != nil || wrote {
		t.Fatalf("a stored chunk is written again: %v %v", wrote, err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get: %v, %d bytes", err, len(got))
	}
	p := s.ChunkPath(id).String()
	if fi, _ := os.Stat(p); fi.Size() >= int64(len(data)) {
		t.Fatalf("chunk not compressed: %d bytes for %d", fi.Size(), len(data))
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "*", "*.tmp")); len(tmps) > 0 {
		t.Fatalf("temporary files left: %v", tmps)
	}

	// One flipped bit in the payload, or a file of another chunk's content.
	b, _ := os.ReadFile(p)
	b[len(b)-3] ^= 1
	os.WriteFile(p, b, 0o600)
	if _, err := s.Get(id); !errors.Is(err, ErrCorruptChunk) {
		t.Fatalf("flipped bit: %v", err)
	}
	other := append([]byte("x"), data[1:]...)
	os.WriteFile(p, encodeChunk(other), 0o600)
	if _, err := s.Get(id); !errors.Is(err, ErrCorruptChunk) {
		t.Fatalf("another chunk under this name: %v", err)
	}
}

// TestPutSyncsAFoundChunk: a writer that failed or was killed after its
// rename left a chunk whose directory entry nobody fsynced. The next
// writer finds it and must make it durable before an index names it.
func TestPutSyncsAFoundChunk(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("left by a killed writer "), 1000)
	id := ChunkID(sha256.Sum256(data))
	first := &ChunkStore{Dir: hostio.In(dir)}
	if wrote, err := first.Put(id, data); err != nil || !wrote {
		t.Fatalf("first put: %v %v", wrote, err)
	}
	// first never syncs: its process is gone.
	var ops []string
	next := &ChunkStore{Dir: hostio.In(dir), Seam: &hostio.Seam{Trace: func(_ int, op string) { ops = append(ops, op) }}}
	if wrote, err := next.Put(id, data); err != nil || wrote {
		t.Fatalf("put of a stored chunk: %v %v", wrote, err)
	}
	if err := next.Sync(); err != nil {
		t.Fatal(err)
	}
	want := "fsync dir " + next.ChunkPath(id).Dir().String()
	if !slices.Contains(ops, want) || ops[len(ops)-1] != "fsync dir "+next.Dir.String() {
		t.Fatalf("the found chunk's directory is not made durable: %q", ops)
	}
}

func TestIndexRoundTripAndTorn(t *testing.T) {
	x := Index{Format: "qcow2", Size: 3*ChunkSize + 512, Chunks: make([]ChunkID, 4)}
	x.Chunks[0] = sha256.Sum256([]byte("a"))
	x.Chunks[3] = sha256.Sum256([]byte("b"))
	p := hostio.In(t.TempDir()).MustJoin("disk.index")
	if err := WriteIndex(nil, p, x, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadIndex(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Format != x.Format || got.Size != x.Size || len(got.Chunks) != 4 || got.Chunks[0] != x.Chunks[0] ||
		!got.Chunks[1].IsHole() || got.Chunks[3] != x.Chunks[3] || got.Stored() != 2 {
		t.Fatalf("round trip: %+v", got)
	}
	b, _ := x.MarshalBinary()
	for _, bad := range [][]byte{b[:len(b)-1], b[:len(b)/2], append(append([]byte(nil), b[:40]...), b[41:]...)} {
		if err := new(Index).UnmarshalBinary(bad); !errors.Is(err, ErrCorruptIndex) {
			t.Fatalf("torn index of %d bytes accepted: %v", len(bad), err)
		}
	}
	flipped := append([]byte(nil), b...)
	flipped[30] ^= 0x80
	if err := new(Index).UnmarshalBinary(flipped); !errors.Is(err, ErrCorruptIndex) {
		t.Fatalf("damaged index accepted: %v", err)
	}
	if _, err := (Index{Format: "raw", Size: ChunkSize + 1, Chunks: make([]ChunkID, 1)}).MarshalBinary(); err == nil {
		t.Fatal("an index with too few chunks was written")
	}
}

// A qcow2 with data, zeros and a backing file goes into the store and comes
// back, as qcow2 and as raw, with the same guest-visible content; a second
// store of the same disk writes nothing, one changed chunk writes one.
func TestStoreAndRebuildImage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	if _, err := qemuImg(ctx, time.Minute, "create", "-q", "-f", "qcow2", base, "18M"); err != nil {
		t.Fatal(err)
	}
	qemuIOWrite(t, base, "write -P 0x11 1M 2M")
	qemuIOWrite(t, base, "write -P 0x22 9M 1k")
	if err := CreateOverlay(ctx, base, "qcow2", top); err != nil {
		t.Fatal(err)
	}
	qemuIOWrite(t, top, "write -P 0x33 17M 512k") // the short last chunk
	qemuIOWrite(t, top, "write -z 9M 4k")         // zeros over base data: a hole now

	s := &ChunkStore{Dir: hostio.In(dir).MustJoin("store")}
	x, st, err := StoreImage(ctx, s, top, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if x.Size != 18<<20 || x.Format != "qcow2" || len(x.Chunks) != 5 {
		t.Fatalf("index: %+v", x)
	}
	// Chunk 0 (data at 1M-3M) and chunk 4 (16M-18M) hold data; 1 to 3 are holes.
	if st.Written != 2 || st.Read != 3 || st.Holes != 3 || x.Stored() != 2 {
		t.Fatalf("first store: %+v", st)
	}
	if _, st, err = StoreImage(ctx, s, top, StoreOptions{}); err != nil || st.Written != 0 {
		t.Fatalf("second store of the same disk: %+v %v", st, err)
	}
	qemuIOWrite(t, top, "write -P 0x44 0 4k")
	x2, st, err := StoreImage(ctx, s, top, StoreOptions{})
	if err != nil || st.Written != 1 || x2.Chunks[4] != x.Chunks[4] || x2.Chunks[0] == x.Chunks[0] {
		t.Fatalf("one changed chunk: %+v %v", st, err)
	}

	// Compressed clusters cannot be read from the file as they lie: the
	// same content comes through qemu-nbd.
	comp := filepath.Join(dir, "compressed.qcow2")
	if _, err := qemuImg(ctx, time.Minute, "convert", "-c", "-O", "qcow2", top, comp); err != nil {
		t.Fatal(err)
	}
	if got, _, err := StoreImage(ctx, nil, comp, StoreOptions{}); err != nil || !got.Equal(x2) {
		t.Fatalf("compressed image: %v", err)
	}

	for _, format := range []string{"qcow2", "raw"} {
		y := x2
		y.Format = format
		dst := hostio.In(dir).MustJoin("rebuilt." + format)
		if err := RebuildImage(ctx, nil, s, y, dst, 0o640); err != nil {
			t.Fatal(err)
		}
		if eq, err := CompareImages(ctx, top, dst.String()); err != nil || !eq {
			t.Fatalf("%s rebuilt differs: %v %v", format, eq, err)
		}
		if fi, err := os.Stat(dst.String()); err != nil || fi.Mode().Perm() != 0o640 {
			t.Fatalf("%s: %v %v", format, fi.Mode(), err)
		}
	}
	// A corrupt chunk fails the rebuild and leaves nothing behind.
	p := s.ChunkPath(x2.Chunks[4]).String()
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o600)
	dst := hostio.In(dir).MustJoin("broken.qcow2")
	if err := RebuildImage(ctx, nil, s, x2, dst, 0o640); !errors.Is(err, ErrCorruptChunk) {
		t.Fatalf("rebuild from a corrupt chunk: %v", err)
	}
	if ents, _ := filepath.Glob(filepath.Join(dir, "broken*")); len(ents) > 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// An overlay made on a retained image carries the leaf's bitmap; a store
// since the retained image's index reads only the chunks written since,
// and a rebase that copies the backing file keeps a clean bitmap clean.
func TestStoreSinceBitmap(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	leaf := "20240101T030000Z"
	os.Mkdir(filepath.Join(dir, leaf), 0o700)
	retained := filepath.Join(dir, leaf, "disk.qcow2")
	if _, err := qemuImg(ctx, time.Minute, "create", "-q", "-f", "qcow2", retained, "32M"); err != nil {
		t.Fatal(err)
	}
	qemuIOWrite(t, retained, "write -P 0x11 0 20M")
	s := &ChunkStore{Dir: hostio.In(dir).MustJoin("store")}
	base, _, err := StoreImage(ctx, s, retained, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}

	top, quiet := filepath.Join(dir, "top.qcow2"), filepath.Join(dir, "quiet.qcow2")
	for _, p := range []string{top, quiet} {
		if err := CreateOverlay(ctx, retained, "qcow2", p); err != nil {
			t.Fatal(err)
		}
	}
	im, err := ImageInfo(ctx, top)
	if err != nil || len(im.Bitmaps) != 1 || im.Bitmaps[0].Name != BitmapName(leaf) || !im.Bitmaps[0].Auto || im.Bitmaps[0].InUse {
		t.Fatalf("overlay bitmaps: %+v %v", im.Bitmaps, err)
	}
	qemuIOWrite(t, top, "write -P 0x22 5M 4k")   // chunk 1
	qemuIOWrite(t, top, "write -P 0x33 25M 64k") // chunk 6
	o := StoreOptions{Since: &base, Bitmap: BitmapName(leaf)}
	x, st, err := StoreImage(ctx, s, top, o)
	if err != nil {
		t.Fatal(err)
	}
	if st.Read != 2 || st.Written != 2 || st.Reused != 4 || st.Holes != 2 {
		t.Fatalf("store since the bitmap: %+v", st)
	}
	full, _, err := StoreImage(ctx, nil, top, StoreOptions{})
	if err != nil || !full.Equal(x) {
		t.Fatalf("the index by bitmap differs from a full read: %v", err)
	}

	// Offline merges: one of an overlay the guest wrote stays dirty, one of
	// an untouched overlay is cleared.
	for _, p := range []string{top, quiet} {
		if err := RebaseStandalone(ctx, p, 32<<20, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, st, err := StoreImage(ctx, nil, quiet, o); err != nil || st.Read != 0 || st.Reused != 5 {
		t.Fatalf("untouched overlay after its rebase: %+v %v", st, err)
	}
	if _, st, err := StoreImage(ctx, nil, top, o); err != nil || st.Read != 6 {
		t.Fatalf("written overlay after its rebase: %+v %v", st, err)
	}

	// A bitmap paired with another disk's index is caught.
	other := base
	other.Chunks = append([]ChunkID(nil), base.Chunks...)
	for i := range 5 {
		other.Chunks[i] = sha256.Sum256([]byte{byte(i)})
	}
	if _, _, err := StoreImage(ctx, nil, quiet, StoreOptions{Since: &other, Bitmap: BitmapName(leaf)}); !errors.Is(err, ErrBitmapMismatch) {
		t.Fatalf("mismatched index: %v", err)
	}
	if err := RemoveBitmaps(ctx, nil, top); err != nil {
		t.Fatal(err)
	}
	if im, _ := ImageInfo(ctx, top); len(im.Bitmaps) != 0 {
		t.Fatalf("bitmaps left: %+v", im.Bitmaps)
	}
}

// A file stored in content-defined chunks comes back byte for byte; the
// same content shifted by an insertion finds most of its chunks stored.
func TestStoreFileContentDefined(t *testing.T) {
	ctx := context.Background()
	dir, s := tempStore(t)
	data := make([]byte, 16<<20)
	rand.NewChaCha8([32]byte{7}).Read(data)
	x, st, err := StoreFile(ctx, s, writeFile(t, dir, "a.state", data))
	if err != nil || st.Written != st.Chunks || st.Chunks < 4 || x.Size != int64(len(data)) {
		t.Fatalf("first file: %+v %v", st, err)
	}
	shifted := append(bytes.Repeat([]byte{0x42}, 4096), data...)
	y, st, err := StoreFile(ctx, s, writeFile(t, dir, "b.state", shifted))
	if err != nil || st.Written > 2 || y.Size != int64(len(shifted)) {
		t.Fatalf("the shifted file stored %d of %d chunks again: %v", st.Written, st.Chunks, err)
	}
	p := dir.MustJoin("b.state.index")
	b, _ := y.MarshalBinary()
	os.WriteFile(p.String(), b, 0o600)
	got, err := ReadFileIndex(p)
	if err != nil || got.Size != y.Size || len(got.Chunks) != len(y.Chunks) {
		t.Fatalf("file index round trip: %v", err)
	}
	if ids, err := IndexChunks(p); err != nil || len(ids) != len(y.Chunks) {
		t.Fatalf("chunks of a file index: %d %v", len(ids), err)
	}
	if err := new(FileIndex).UnmarshalBinary(b[:len(b)-5]); !errors.Is(err, ErrCorruptIndex) {
		t.Fatalf("torn file index: %v", err)
	}
	out := dir.MustJoin("restored.state")
	if err := RebuildFile(ctx, nil, s, got, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if back, _ := os.ReadFile(out.String()); !bytes.Equal(back, shifted) {
		t.Fatal("the rebuilt file differs")
	}
}
