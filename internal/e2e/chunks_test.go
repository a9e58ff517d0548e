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
	files, err := filepath.Glob(filepath.Join(backupRoot, format.ChunkStoreDir, "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
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
	v := s.addVM(true, 64, 0xab)
	if err := waitFilled(v); err != nil {
		t.Fatal(err)
	}
	if err := s.store.Update(s.store.Tree.VMBackup(v.name), "", map[string][]string{
		ldapschema.AttrBackupNumberOfIterations: {"2"}}); err != nil {
		t.Fatal(err)
	}
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
	if got := s.webUIRestore(t, v, one, true); got.ReturnValue != 0 {
		t.Fatalf("restore of night 1: return value %d", got.ReturnValue)
	}
	v.guestReads(t, "vda", 0xab)
	readsSteady(0x5a)
	if got := s.webUIRestore(t, v, two, true); got.ReturnValue != 0 {
		t.Fatalf("restore of night 2: return value %d", got.ReturnValue)
	}
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
	deadline := time.Now().Add(leafLimit)
	for {
		if _, err := os.Stat(dir1); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("night 1's index is still there after retention")
		}
		time.Sleep(50 * time.Millisecond)
	}
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
	s := newSite(t, env.root)
	v := s.addVM(true, 64, 0xab)
	if err := waitFilled(v); err != nil {
		t.Fatal(err)
	}
	startControl(t)
	startNodeWith(t, node.Options{Node: s.host, Hypervisor: env.hv, Storage: format.StorageChunks})
	s.backedUp(t, v, time.Date(2024, 1, 1, 3, 0, 0, 0, time.UTC))
	// On the image, but the bitmap that recorded it dies with QEMU.
	if err := testenv.WriteGuestPatternDurable(env.lv.URI, env.lv.LogDir, v.name, "vda", 0x11, testenv.PatternOffset, testenv.PatternLength); err != nil {
		t.Fatal(err)
	}
	killQEMU(t, v.name)
	deadline := time.Now().Add(leafLimit)
	for v.running(t) {
		if time.Now().After(deadline) {
			t.Fatal("the killed VM still runs")
		}
		time.Sleep(50 * time.Millisecond)
	}
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
	if err := writeGuest(v, "vda", 0x22); err != nil {
		t.Fatal(err)
	}
	if got := s.webUIRestore(t, v, two, true); got.ReturnValue != 0 {
		t.Fatalf("restore of night 2: return value %d", got.ReturnValue)
	}
	v.guestReads(t, "vda", 0x11)
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
	if got := s.webUIRestore(t, v, two, true); got.ReturnValue != 0 {
		t.Fatalf("restore: return value %d", got.ReturnValue)
	}
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
	s := newSite(t, env.root)
	v := s.addVM(true, 64, 0xab)
	if err := waitFilled(v); err != nil {
		t.Fatal(err)
	}
	startControl(t)
	startNodeWith(t, node.Options{Node: s.host, Hypervisor: env.hv, Storage: format.StorageChunks})
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
	if err := writeGuest(v, "vda", 0x22); err != nil {
		t.Fatal(err)
	}
	if got := s.webUIRestore(t, v, two, true); got.ReturnValue != 0 {
		t.Fatalf("restore: return value %d", got.ReturnValue)
	}
	v.guestReads(t, "vda", 0x11)
	if im, err := format.ImageInfo(context.Background(), v.disks[0].Path); err != nil || im.VirtualSize != 80<<20 {
		t.Fatalf("restored disk: %+v %v", im, err)
	}
}
