package recovery

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/format/formattest"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// toChunks turns the iteration f (written with real images) into one of
// chunks storage, as a node leaves it: the first MiB of each disk holds
// pattern, the images and the state go into the root's store with an
// index each, and their copies are gone.
func toChunks(t *testing.T, f fakeBackup, pattern byte) fakeBackup {
	t.Helper()
	ctx := context.Background()
	l := format.Layout{BackupRoot: f.root, Kind: ldapschema.StoragePersistent, Pool: f.pool, VM: f.vm, Leaf: f.leaf}
	store := format.OpenChunkStore(f.root, nil)
	for _, d := range f.disks {
		img := f.file(filepath.Base(f.image(d)))
		if err := testenv.WriteImage(img, fmt.Sprintf("write -P 0x%02x 0 1M", pattern)); err != nil {
			t.Fatal(err)
		}
		x, _, err := format.StoreImage(ctx, store, img, format.StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := format.WriteIndex(nil, l.BackupIndex(f.image(d)), x, 0o640); err != nil {
			t.Fatal(err)
		}
		os.Remove(img)
	}
	state := f.file(l.StateName())
	x, _, err := format.StoreFile(ctx, store, hostio.In(f.dir()).MustJoin(filepath.Base(state)))
	if err != nil {
		t.Fatal(err)
	}
	if err := format.WriteIndex(nil, l.BackupIndex(l.StateName()), x, 0o640); err != nil {
		t.Fatal(err)
	}
	os.Remove(state)
	return f
}

// index is the path of the index of base (a disk image's or the state's
// file name) in f.
func (f fakeBackup) index(base string) string { return f.file(format.IndexName(base)) }

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestScanChunkIterations: iterations of chunks storage are complete when
// their indexes are sound and name only chunks the store has, beside full
// ones of the same VM; their sizes are those the node reports.
func TestScanChunkIterations(t *testing.T) {
	s := newSite(t, 5)
	mk := func(vm, leaf string) fakeBackup {
		return fakeBackup{root: s.root, pool: "pool-a", vm: vm, leaf: leaf, disks: []string{"vda", "vdb"}, running: true, qcow2: true, cfg: s.cfg}.write(t, s.store.Tree.Base)
	}
	full := mk("vm-c", "20240101T030000Z")
	first := toChunks(t, mk("vm-c", "20240102T030000Z"), 0x5a)
	second := toChunks(t, mk("vm-c", "20240103T030000Z"), 0x5a) // the same content: nothing new
	chunks := formattest.ChunkFiles(t, s.root)
	if len(chunks) != 2 { // the disks' first chunks (equal) and the state's
		t.Fatalf("store holds %d chunks: %q", len(chunks), chunks)
	}

	scan := scanRoots(t, s.root)
	if len(scan.Strays) != 0 {
		t.Fatalf("strays %+v", scan.Strays)
	}
	stateSize := int64(len(saveImage("vm-c", 4096)))
	plain := fileSize(t, first.file("vm-c.xml")) + fileSize(t, first.file("vm-c.ldif"))
	var stored int64
	for _, c := range chunks {
		stored += fileSize(t, c)
	}
	for _, c := range []struct {
		f            fakeBackup
		bytes, logic int64
	}{
		{first, plain + stored, 2*16<<20 + stateSize},
		{second, plain, 2*16<<20 + stateSize},
	} {
		it := findIteration(t, scan.Iterations, "vm-c", c.f.leaf)
		if it.Status != StatusNew || it.State != "saved" || len(it.Notes) != 0 {
			t.Fatalf("%s: %+v", c.f.leaf, it)
		}
		if it.Bytes != c.bytes || it.LogicalBytes != c.logic {
			t.Fatalf("%s: %d bytes, %d logical; want %d, %d", c.f.leaf, it.Bytes, it.LogicalBytes, c.bytes, c.logic)
		}
		if len(it.Disks) != 2 || !it.Disks[0].Chunks || it.Disks[0].File != "vm-c-vda.qcow2.index."+c.f.leaf || it.Disks[0].Bytes != 16<<20 {
			t.Fatalf("%s: disks %+v", c.f.leaf, it.Disks)
		}
	}
	if it := findIteration(t, scan.Iterations, "vm-c", full.leaf); it.Status != StatusNew || it.LogicalBytes != 0 || it.Disks[0].Chunks {
		t.Fatalf("the full iteration beside them: %+v", it)
	}

	// Imported like a full one, with the sizes the node writes.
	addSaved(t, s.store, full)
	res, err := Import(s.store, validate(t, s.store, scan, false), time.Unix(1700000000, 0))
	if err != nil || len(res) != 1 || len(res[0].Leaves) != 3 {
		t.Fatalf("import: %+v %v", res, err)
	}
	leaves, err := control.Leaves(s.store, "vm-c")
	if err != nil || len(leaves) != 3 {
		t.Fatalf("leaves %+v %v", leaves, err)
	}
	for _, l := range leaves {
		want := []string{RecoveredPrefix + "20231114T221320Z", fmt.Sprintf("retainBytes: %d", plain+stored), fmt.Sprintf("retainLogicalBytes: %d", 2*16<<20+stateSize)}
		switch l.Name {
		case full.leaf:
			want = want[:2]
			want[1] = fmt.Sprintf("retainBytes: %d", findIteration(t, scan.Iterations, "vm-c", full.leaf).Bytes)
		case second.leaf:
			want[1] = fmt.Sprintf("retainBytes: %d", plain)
		}
		if !slices.Equal(l.ExecutionTime, want) {
			t.Fatalf("%s: execution times %q, want %q", l.Name, l.ExecutionTime, want)
		}
	}
}

// TestScanBrokenChunkIterations: a torn or missing index, or a chunk named
// but missing, makes an iteration broken, with the reason; each VM has
// content of its own, so each is broken alone.
func TestScanBrokenChunkIterations(t *testing.T) {
	root := t.TempDir()
	const leaf = "20240101T030000Z"
	cases := []struct {
		vm      string
		breakIt func(f fakeBackup) string // returns what the report must say
	}{
		{"vm-torn", func(f fakeBackup) string {
			p := f.index(filepath.Base(f.image("vda")))
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-1], 0o640)
			return "disk vda (vm-torn-vda.qcow2.index." + leaf + "): " + p + ": corrupt index: checksum mismatch (torn or damaged)"
		}},
		{"vm-noindex", func(f fakeBackup) string {
			os.Remove(f.index(filepath.Base(f.image("vda"))))
			return "vm-noindex-vda.qcow2.index." + leaf + " is missing"
		}},
		{"vm-nochunk", func(f fakeBackup) string {
			x, err := format.ReadIndex(hostio.In(f.dir()).MustJoin(filepath.Base(f.index(filepath.Base(f.image("vda"))))))
			if err != nil {
				t.Fatal(err)
			}
			os.Remove(format.OpenChunkStore(f.root, nil).ChunkPath(x.Chunks[0]).String())
			return fmt.Sprintf("disk vda (vm-nochunk-vda.qcow2.index.%s): 1 of its 1 chunks missing from the store %s (first %s)",
				leaf, filepath.Join(root, format.ChunkStoreDir), x.Chunks[0])
		}},
		{"vm-nostateindex", func(f fakeBackup) string {
			os.Remove(f.index("vm-nostateindex.state"))
			return "vm-nostateindex.state.index." + leaf + " is missing"
		}},
		{"vm-tornstate", func(f fakeBackup) string {
			os.WriteFile(f.index("vm-tornstate.state"), []byte("STNYFIX1"), 0o640)
			return "vm-tornstate.state.index." + leaf + ": " + f.index("vm-tornstate.state") + ": corrupt index: no file index header"
		}},
		{"vm-nostatechunk", func(f fakeBackup) string {
			for _, c := range formattest.ChunkFiles(t, root) {
				if b, err := format.OpenChunkStore(root, nil).Get(chunkID(t, c)); err == nil && strings.Contains(string(b), "<name>vm-nostatechunk<") {
					os.Remove(c)
				}
			}
			return "vm-nostatechunk.state.index." + leaf + ": 1 of its 1 chunks missing from the store"
		}},
	}
	for i, c := range cases {
		f := fakeBackup{root: root, pool: "pool-a", vm: c.vm, leaf: leaf, disks: []string{"vda"}, running: true, qcow2: true}.write(t, "o=x")
		toChunks(t, f, byte(0x10+i))
	}
	want := map[string]string{}
	for _, c := range cases {
		want[c.vm] = c.breakIt(fakeBackup{root: root, pool: "pool-a", vm: c.vm, leaf: leaf, disks: []string{"vda"}})
	}
	scan := scanRoots(t, root)
	if len(scan.Iterations) != len(cases) {
		t.Fatalf("%d iterations", len(scan.Iterations))
	}
	for _, it := range scan.Iterations {
		if it.Status != StatusBroken || len(it.Problems) != 1 {
			t.Fatalf("%s: %s, problems %q; want broken for one reason", it.VM, it.Status, it.Problems)
		}
		wantProblem(t, it, want[it.VM])
	}
}

func chunkID(t *testing.T, p string) format.ChunkID {
	t.Helper()
	id, ok := format.ParseChunkID(filepath.Base(p))
	if !ok {
		t.Fatalf("%s is no chunk", p)
	}
	return id
}
