package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/format/formattest"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/nodebackupd/node"
)

// A second region of the disk that the guest writes once and never again:
// its chunks must be stored once for every night.
const (
	steadyOffset = 20 << 20
	steadyLength = 4 << 20
)

// storedChunks counts the chunk files in the backup root's store.
func storedChunks(t *testing.T, backupRoot string) int {
	t.Helper()
	n := 0
	for _, f := range formattest.ChunkFiles(t, backupRoot) {
		if strings.HasSuffix(f, ".tmp") {
			t.Fatalf("a temporary chunk file is left: %s", f)
		}
		n++
	}
	return n
}

// TestChunkedBackupsAndRestores: a running VM backed up on three nights in
// chunks storage, the guest writing between them. Each night stores only
// the chunks whose content is new; restoring either of the first two
// nights brings back exactly that night's data as the guest reads it; and
// retention's deletion of the oldest night removes its index.
func TestChunkedBackupsAndRestores(t *testing.T) {
	s := newSite(t, env.root)
	v := s.filledVM(true, 64, 0xab)
	s.keepIterations(v, 2)
	writeSteady := func(p byte) {
		t.Helper()
		if err := testenv.WriteGuestPattern(env.lv.URI, env.lv.LogDir, v.name, "vda", p, steadyOffset, steadyLength); err != nil {
			t.Fatal(err)
		}
	}
	readsSteady := func(p byte) {
		t.Helper()
		if err := testenv.VerifyGuestPattern(env.lv.URI, env.lv.LogDir, v.name, "vda", p, steadyOffset, steadyLength); err != nil {
			t.Fatalf("guest does not read its steady region: %v", err)
		}
	}
	writeSteady(0x5a)
	startNightlyControl(t)
	startNodeWith(t, node.Options{Node: s.host, Hypervisor: env.hv, Storage: format.StorageChunks})
	day := func(d int) time.Time { return time.Date(2024, 1, d, 3, 0, 0, 0, time.UTC) }
	disk := v.disks[0].Path
	vmDir := filepath.Join(s.backup, "vm-persistent", "pool-a", v.name)

	// Night 1: the pattern region (1 MiB to 9 MiB: chunks 0 to 2) and the
	// steady region (chunk 5) hold data, the rest of the 64 MiB is holes.
	one := s.backedUp(t, v, day(1))
	dir1 := filepath.Join(vmDir, one.Name)
	if _, err := os.Stat(filepath.Join(dir1, filepath.Base(disk)+"."+one.Name)); !os.IsNotExist(err) {
		t.Fatalf("chunks storage kept a whole copy of the disk: %v", err)
	}
	idx1, err := format.ReadIndex(hostio.In(dir1).MustJoin(filepath.Base(disk) + ".index." + one.Name))
	if err != nil {
		t.Fatal(err)
	}
	if idx1.Stored() != 4 || len(idx1.Chunks) != 16 || !hasTime(one, "retainChunks: 4 read, 0 reused, 12 holes, 4 new of 16") {
		t.Fatalf("night 1 index: %d chunks, %d stored; want 16 and 4 (%v)", len(idx1.Chunks), idx1.Stored(), one.ExecutionTime)
	}
	// The saved state too is in the store, by its index.
	if _, err := format.ReadFileIndex(hostio.In(dir1).MustJoin(v.name + ".state.index." + one.Name)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir1, v.name+".state."+one.Name)); !os.IsNotExist(err) {
		t.Fatalf("chunks storage kept a plain copy of the state: %v", err)
	}
	after1 := storedChunks(t, s.backup)

	// Night 2: only the pattern region changed.
	if err := writeGuest(v, "vda", 0x11); err != nil {
		t.Fatal(err)
	}
	two := s.backedUp(t, v, day(2))
	t.Logf("night 2 added %d chunks to the store, disk and state", storedChunks(t, s.backup)-after1)
	// The guest's RAM did not change: most of the saved state's chunks are
	// found in the store (night 1 stored the whole 64 MiB).
	if b1, b2 := retainBytes(t, one), retainBytes(t, two); b2*4 > b1 {
		t.Fatalf("night 2 added %d bytes, night 1 %d: the state was stored again", b2, b1)
	}
	// The live disk records the writes since night 2 in that night's bitmap
	// alone: the merge did not carry night 1's down to it.
	if im, err := format.ImageInfo(context.Background(), disk); err != nil || len(im.Bitmaps) != 1 || im.Bitmaps[0].Name != "stoney-"+two.Name {
		t.Fatalf("live disk's bitmaps after night 2: %+v %v", im.Bitmaps, err)
	}
	// controld ls shows what each backup holds and what it added.
	listed, err := control.ListBackups(s.store, v.name)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range listed {
		if b.Leaf == two.Name && (b.LogicalBytes != retainLogical(t, two) || b.LogicalBytes <= 64<<20 || b.LogicalBytes < 4*b.SizeBytes) {
			t.Fatalf("ls: night 2 holds %d bytes and added %d", b.LogicalBytes, b.SizeBytes)
		}
	}
	// The overlay of night 1 recorded the guest's writes: only their
	// chunks were read, the steady one came from night 1's index.
	if !hasTime(two, "retainChunks: 3 read, 1 reused, 12 holes, 3 new of 16") ||
		!hasTime(two, "retainRead "+filepath.Base(disk)+": bitmap stoney-"+one.Name) {
		t.Fatalf("night 2 did not read by the bitmap: %v", two.ExecutionTime)
	}

	// Each night restores to exactly its own data.
	writeSteady(0x77)
	s.restored(t, v, one)
	v.guestReads(t, "vda", 0xab)
	readsSteady(0x5a)
	s.restored(t, v, two)
	v.guestReads(t, "vda", 0x11)
	readsSteady(0x5a)
	noPreRestore(t, v)

	// Night 3, with two iterations kept: night 1 goes, and its index with it.
	if err := writeGuest(v, "vda", 0x22); err != nil {
		t.Fatal(err)
	}
	three := s.backedUp(t, v, day(3))
	if !hasTime(three, "retainChunks: 4 read, 0 reused, 12 holes, 3 new of 16") {
		t.Fatalf("night 3 did not store exactly the 3 changed chunks: %v", three.ExecutionTime)
	}
	// The restored disk has no history to pair with an index: read whole.
	if !hasTime(three, "retainRead "+filepath.Base(disk)+": full: no dirty bitmap") {
		t.Fatalf("night 3 after a restore did not read the whole disk: %v", three.ExecutionTime)
	}
	waitUntil(t, leafLimit, "night 1's index is still there after retention", func() bool {
		_, err := os.Stat(dir1)
		return os.IsNotExist(err)
	})
}

// chunkedSite is a site with one VM, filled by its guest, and a controld and
// a node that keeps its backups in chunks storage.
func chunkedSite(t *testing.T, running bool, mib int, pattern byte) (*site, *vm) {
	t.Helper()
	s := newSite(t, env.root)
	v := s.filledVM(running, mib, pattern)
	startControl(t)
	startNodeWith(t, node.Options{Node: s.host, Hypervisor: env.hv, Storage: format.StorageChunks})
	return s, v
}

func hasTime(l ldapschema.Leaf, prefix string) bool {
	for _, v := range l.ExecutionTime {
		if strings.HasPrefix(v, prefix) {
			return true
		}
	}
	return false
}

// TestChunkedBackupAfterQEMUKilled: the VM's QEMU is killed between two
// nights, so the bitmap of its disk is left in use. The second night reads
// the whole disk instead, says so, and its backup restores to that night's
// data.
func TestChunkedBackupAfterQEMUKilled(t *testing.T) {
	s, v := chunkedSite(t, true, 64, 0xab)
	s.backedUp(t, v, time.Date(2024, 1, 1, 3, 0, 0, 0, time.UTC))
	// On the image, but the bitmap that recorded it dies with QEMU.
	if err := testenv.WriteGuestPatternDurable(env.lv.URI, env.lv.LogDir, v.name, "vda", 0x11, testenv.PatternOffset, testenv.PatternLength); err != nil {
		t.Fatal(err)
	}
	killQEMU(t, v.name)
	waitUntil(t, leafLimit, "the killed VM still runs", func() bool { return !v.running(t) })
	if err := testenv.StartVM(env.lv.URI, v.name); err != nil {
		t.Fatal(err)
	}
	v.guestReads(t, "vda", 0x11)
	im, err := format.ImageInfo(context.Background(), v.disks[0].Path)
	if err != nil || len(im.Bitmaps) != 1 || !im.Bitmaps[0].InUse {
		t.Fatalf("after the kill the disk's bitmap is not left in use: %+v %v", im.Bitmaps, err)
	}

	two := s.backedUp(t, v, time.Date(2024, 1, 2, 3, 0, 0, 0, time.UTC))
	want := "retainRead " + filepath.Base(v.disks[0].Path) + ": full: bitmap stoney-20240101T030000Z in use"
	if !hasTime(two, want) {
		t.Fatalf("night 2 does not say it read the whole disk (%q): %v", want, two.ExecutionTime)
	}
	s.restoresTo(t, v, two, 0x11)
}

// killQEMU ends the VM's QEMU with SIGKILL, as the OOM killer would.
func killQEMU(t *testing.T, name string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("guest="+name+",")) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no QEMU of %s found", name)
}

// TestChunkedShutOffVM: a shut-off VM's merge is an offline rebase, which
// marks every cluster it copies in the overlay's bitmap. Its bitmap had
// recorded nothing and is cleared, so the second night reads no chunk at
// all; the backup restores to the disk's data.
func TestChunkedShutOffVM(t *testing.T) {
	s := newSite(t, env.root)
	v := s.addVM(false, 64, 0xab)
	startControl(t)
	startNodeWith(t, node.Options{Node: s.host, Hypervisor: env.hv, Storage: format.StorageChunks})
	s.backedUp(t, v, time.Date(2024, 1, 1, 3, 0, 0, 0, time.UTC))
	two := s.backedUp(t, v, time.Date(2024, 1, 2, 3, 0, 0, 0, time.UTC))
	if !hasTime(two, "retainChunks: 0 read, 3 reused, 13 holes, 0 new of 16") ||
		!hasTime(two, "retainRead "+filepath.Base(v.disks[0].Path)+": bitmap stoney-20240101T030000Z") {
		t.Fatalf("night 2 of an unchanged shut-off VM read chunks: %v", two.ExecutionTime)
	}
	s.restored(t, v, two)
	if v.running(t) {
		t.Fatal("the restored shut-off VM runs")
	}
	if err := testenv.StartVM(env.lv.URI, v.name); err != nil {
		t.Fatal(err)
	}
	v.guestReads(t, "vda", 0xab)
}

func retainBytes(t *testing.T, l ldapschema.Leaf) int64 { return executionBytes(t, l, "retainBytes") }

func retainLogical(t *testing.T, l ldapschema.Leaf) int64 {
	return executionBytes(t, l, "retainLogicalBytes")
}

func executionBytes(t *testing.T, l ldapschema.Leaf, name string) int64 {
	t.Helper()
	_, bytes := control.ParseExecutionTimes(l.ExecutionTime)
	n, ok := bytes[name]
	if !ok {
		t.Fatalf("no %s: %v", name, l.ExecutionTime)
	}
	return n
}

// TestChunkedResizedDisk: a disk grown between two nights keeps its bitmap,
// but the previous index is of another size: the second night reads the
// whole disk, says why, and restores to the grown disk with its data.
func TestChunkedResizedDisk(t *testing.T) {
	s, v := chunkedSite(t, true, 64, 0xab)
	one := s.backedUp(t, v, time.Date(2024, 1, 1, 3, 0, 0, 0, time.UTC))
	if out, err := exec.Command("virsh", "-c", env.lv.URI, "blockresize", v.name, "vda", "80M").CombinedOutput(); err != nil {
		t.Fatalf("virsh blockresize: %v: %s", err, out)
	}
	if err := writeGuest(v, "vda", 0x11); err != nil {
		t.Fatal(err)
	}
	two := s.backedUp(t, v, time.Date(2024, 1, 2, 3, 0, 0, 0, time.UTC))
	want := "retainRead " + filepath.Base(v.disks[0].Path) + ": full: disk resized since " + one.Name
	if !hasTime(two, want) || !hasTime(two, "retainChunks: 3 read, 0 reused, 17 holes, 3 new of 20") {
		t.Fatalf("night 2 after a resize (%q): %v", want, two.ExecutionTime)
	}
	s.restoresTo(t, v, two, 0x11)
	if im, err := format.ImageInfo(context.Background(), v.disks[0].Path); err != nil || im.VirtualSize != 80<<20 {
		t.Fatalf("restored disk: %+v %v", im, err)
	}
}

// TestChunkedDiskAdded: a disk attached between two nights has no bitmap
// and no index of the first: the second night reads it whole and says why,
// the first disk by its bitmap; restoring the second night brings back
// both disks' data as the guest reads it.
func TestChunkedDiskAdded(t *testing.T) {
	s, v := chunkedSite(t, true, 64, 0xab)
	one := s.backedUp(t, v, time.Date(2024, 1, 1, 3, 0, 0, 0, time.UTC))

	// The operator adds a disk to the VM and its entry, and restarts it (the
	// test machine has no PCI hotplug); QEMU stops cleanly, so vda's
	// bitmap stays usable.
	if err := writeGuest(v, "vda", 0x11); err != nil {
		t.Fatal(err)
	}
	added := filepath.Join(s.images, v.name+"-disk1.qcow2")
	for _, c := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", added, "32M"},
		{"virsh", "-c", env.lv.URI, "attach-disk", v.name, added, "vdb",
			"--driver", "qemu", "--subdriver", "qcow2", "--targetbus", "virtio", "--config"},
		{"virsh", "-c", env.lv.URI, "destroy", v.name, "--graceful"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	if err := testenv.StartVM(env.lv.URI, v.name); err != nil {
		t.Fatal(err)
	}
	if err := s.store.Add(ldapschema.NewDiskAddRequest(s.store.Tree, v.name, ldapschema.Disk{Target: "vdb", SourceFile: added})); err != nil {
		t.Fatal(err)
	}
	if err := writeGuest(v, "vdb", 0xcd); err != nil {
		t.Fatal(err)
	}

	two := s.backedUp(t, v, time.Date(2024, 1, 2, 3, 0, 0, 0, time.UTC))
	for _, want := range []string{
		"retainRead " + filepath.Base(v.disks[0].Path) + ": bitmap stoney-" + one.Name,
		"retainRead " + filepath.Base(added) + ": full: no dirty bitmap",
		// vda: its 3 written chunks read, its steady one reused; vdb's 3
		// read whole, 5 holes. The logical size is both disks and the state.
		"retainChunks: 6 read, 0 reused, 18 holes, 6 new of 24",
	} {
		if !hasTime(two, want) {
			t.Fatalf("night 2 does not say %q: %v", want, two.ExecutionTime)
		}
	}
	dir2 := filepath.Join(s.backup, "vm-persistent", "pool-a", v.name, two.Name)
	if _, err := format.ReadIndex(hostio.In(dir2).MustJoin(filepath.Base(added) + ".index." + two.Name)); err != nil {
		t.Fatalf("no index of the added disk: %v", err)
	}

	for _, w := range []struct {
		target  string
		pattern byte
	}{{"vda", 0x22}, {"vdb", 0x33}} {
		if err := writeGuest(v, w.target, w.pattern); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.webUIRestore(t, v, two, true); got.ReturnValue != 0 {
		t.Fatalf("restore of night 2: return value %d", got.ReturnValue)
	}
	v.guestReads(t, "vda", 0x11)
	v.guestReads(t, "vdb", 0xcd)
}

// chunkIDs are the chunks the indexes of the iterations in the backup
// root name, by iteration (its leaf).
func chunkIDs(t *testing.T, backupRoot string) map[string]map[format.ChunkID]bool {
	t.Helper()
	refs, err := format.FindIndexes(backupRoot)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[format.ChunkID]bool{}
	for _, ref := range refs {
		ids, err := format.IndexChunks(ref.Path)
		if err != nil {
			t.Fatal(err)
		}
		if out[ref.Leaf] == nil {
			out[ref.Leaf] = map[format.ChunkID]bool{}
		}
		for _, id := range ids {
			out[ref.Leaf][id] = true
		}
	}
	return out
}

// TestChunkedCorruptChunk: a chunk two nights' indexes name is damaged on
// the storage. Verify finds it, names both backups, and moves it aside;
// the next night the guest writes that content again, the backup stores
// it anew, and verify is clean.
func TestChunkedCorruptChunk(t *testing.T) {
	ctx := context.Background()
	s, v := chunkedSite(t, true, 64, 0xab)
	s.keepIterations(v, 3)
	one := s.backedUp(t, v, time.Date(2024, 1, 1, 3, 0, 0, 0, time.UTC))
	two := s.backedUp(t, v, time.Date(2024, 1, 2, 3, 0, 0, 0, time.UTC)) // nothing written: the same chunks
	disk := filepath.Base(v.disks[0].Path)
	idx, err := format.ReadIndex(hostio.In(filepath.Join(s.backup, "vm-persistent", "pool-a", v.name, two.Name)).MustJoin(disk + ".index." + two.Name))
	if err != nil {
		t.Fatal(err)
	}
	bad := idx.Chunks[0] // zeros, then the pattern from 1 MiB
	store := format.OpenChunkStore(s.backup, nil)
	f, err := os.OpenFile(store.ChunkPath(bad).String(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damaged by the storage"), 100); err != nil {
		t.Fatal(err)
	}
	f.Close()

	r, err := format.Verify(ctx, store, s.backup, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{v.name + " " + one.Name + " " + disk, v.name + " " + two.Name + " " + disk}
	if len(r.Bad) != 1 || r.Bad[0].ID != bad || !strings.Contains(r.Bad[0].Problem, "corrupt chunk") ||
		strings.Join(r.Bad[0].Backups, "\n") != strings.Join(want, "\n") {
		t.Fatalf("verify found %+v; want chunk %s named by %q", r.Bad, bad, want)
	}
	if !hostio.Exists(store.ChunkPath(bad).Dir().MustJoin(bad.String() + ".bad")) {
		t.Fatal("the damaged chunk was not moved aside")
	}

	// The guest writes the same content again: night 3 reads it by its
	// bitmap and, the store lacking it, writes it.
	if err := writeGuest(v, "vda", 0xab); err != nil {
		t.Fatal(err)
	}
	three := s.backedUp(t, v, time.Date(2024, 1, 3, 3, 0, 0, 0, time.UTC))
	if !hasTime(three, "retainChunks: 3 read, 0 reused, 13 holes, 1 new of 16") {
		t.Fatalf("night 3 did not store the damaged chunk again: %v", three.ExecutionTime)
	}
	verifyClean(t, s.backup)
	s.restoresTo(t, v, two, 0xab)
}

// verifyClean: format.Verify reads every chunk of the root's store and
// finds none damaged or missing.
func verifyClean(t *testing.T, backupRoot string) {
	t.Helper()
	r, err := format.Verify(context.Background(), format.OpenChunkStore(backupRoot, nil), backupRoot, 0, 1)
	if err != nil || len(r.Bad) != 0 || r.Checked == 0 {
		t.Fatalf("verify: %+v %v", r, err)
	}
}

// ageChunks sets the modification time of every file in the store d back:
// for a collection's grace period, they were written long ago.
func ageChunks(t *testing.T, backupRoot string, d time.Duration) {
	t.Helper()
	old := time.Now().Add(-d)
	for _, f := range formattest.ChunkFiles(t, backupRoot) {
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

// TestChunkedGarbageCollection: collections run again and again while a
// retain stores content that only a deleted iteration named (so it is in
// the store, unnamed, older than the grace period); that night restores to
// the guest's data. Then a collection after deleting an iteration removes
// exactly the chunks only it named.
func TestChunkedGarbageCollection(t *testing.T) {
	ctx := context.Background()
	s, v := chunkedSite(t, true, 64, 0xab)
	s.keepIterations(v, 3)
	store := format.OpenChunkStore(s.backup, nil)
	const grace = time.Hour
	day := func(d int) time.Time { return time.Date(2024, 1, d, 3, 0, 0, 0, time.UTC) }
	vmDir := filepath.Join(s.backup, "vm-persistent", "pool-a", v.name)
	forget := func(l ldapschema.Leaf) { // as retention's delete does
		t.Helper()
		if err := os.RemoveAll(filepath.Join(vmDir, l.Name)); err != nil {
			t.Fatal(err)
		}
		if err := s.store.Delete(l.DN); err != nil {
			t.Fatal(err)
		}
	}
	one := s.backedUp(t, v, day(1))
	if err := writeGuest(v, "vda", 0x11); err != nil {
		t.Fatal(err)
	}
	two := s.backedUp(t, v, day(2))
	if err := writeGuest(v, "vda", 0xab); err != nil { // night 1's content again
		t.Fatal(err)
	}
	forget(one)
	ageChunks(t, s.backup, 2*grace)
	// Night 1's disk chunks are named by no index now: a collection
	// removes them unless the retain found them first.
	unnamed := storedChunks(t, s.backup) - len(chunkIDs(t, s.backup)[two.Name])
	if unnamed < 3 {
		t.Fatalf("%d chunks no index names; want at least night 1's 3 of the disk", unnamed)
	}

	_, started := control.StartBackups(s.store, []string{v.name}, day(3))
	if started[0].Err != nil {
		t.Fatal(started[0].Err)
	}
	waitLeaf(t, s.store, started[0].DN, leafLimit, modeIs("retaining"))
	passes, removed := 0, 0
	for {
		r, err := format.CollectGarbage(ctx, store, s.backup, grace)
		if err != nil {
			t.Fatalf("collection during the retain: %v", err)
		}
		passes++
		removed += r.Removed
		e, err := s.store.Get(started[0].DN, ldapschema.AttrMode)
		if err != nil {
			t.Fatal(err)
		}
		if e.GetAttributeValue(ldapschema.AttrMode) != "retaining" {
			break
		}
	}
	t.Logf("%d collections during the retain removed %d chunks", passes, removed)
	three := waitLeaf(t, s.store, started[0].DN, leafLimit, modeIs("finished"))
	if three.ReturnValue != 0 {
		t.Fatalf("night 3: return value %d", three.ReturnValue)
	}
	verifyClean(t, s.backup)
	s.restoresTo(t, v, three, 0xab)

	// Night 2 goes: a collection frees exactly the chunks only it named.
	named := chunkIDs(t, s.backup)
	var only []format.ChunkID
	for id := range named[two.Name] {
		if !named[three.Name][id] {
			only = append(only, id)
		}
	}
	before := storedChunks(t, s.backup)
	if want := len(named[three.Name]) + len(only); before != want || len(only) == 0 {
		t.Fatalf("store holds %d chunks; nights 2 and 3 name %d, %d of them night 2 alone", before, want, len(only))
	}
	forget(two)
	ageChunks(t, s.backup, 2*grace)
	r, err := format.CollectGarbage(ctx, store, s.backup, grace)
	if err != nil {
		t.Fatal(err)
	}
	if r.Removed != len(only) || storedChunks(t, s.backup) != before-len(only) {
		t.Fatalf("collection after deleting night 2: %+v; want %d removed", r, len(only))
	}
	for _, id := range only {
		if store.Has(id) {
			t.Fatalf("chunk %s only night 2 named is still stored", id)
		}
	}
	for id := range named[three.Name] {
		if !store.Has(id) {
			t.Fatalf("chunk %s night 3 names is gone", id)
		}
	}
}
