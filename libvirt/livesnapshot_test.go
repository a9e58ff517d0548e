package libvirt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lv "libvirt.org/go/libvirt"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// A live snapshot leaves the seed's files, the guest keeps its RAM (it does
// not boot), and restoring the backup brings back the instant: the RAM as
// it was and the disk without what the guest wrote afterwards.
func TestSnapshotLive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := openH(t)
	v := newVM(t, "live1", "", 256, true, 0xab)
	boots := testenv.SerialBoots(v.spec)
	ram := v.guestMemory(t)

	req := v.request(ramDisk)
	req.Live = true
	res, err := h.Snapshot(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("live: save %v restore %v downtime %v total %v", res.Save, res.Restore, res.Downtime, res.Total)
	if !res.WasRunning || !res.Live || res.Bounded || res.Downtime <= 0 || res.Downtime >= res.Total {
		t.Fatalf("result %+v", res)
	}
	v.seedLayout(t, res, 256)
	if !v.running(t, h) || testenv.SerialBoots(v.spec) != boots {
		t.Fatal("the guest did not keep its RAM")
	}
	v.guestReadsOriginal(t)
	if !bytes.Equal(v.guestMemory(t), ram) {
		t.Fatal("the guest's RAM changed")
	}

	// After the instant: a write the backup must not hold.
	v.guestWrites(t, "vda", 0xcd, testenv.PatternOffset, 1<<20)
	v.restoreInstant(t, h, res)
	if testenv.SerialBoots(v.spec) != boots {
		t.Fatal("the restored guest booted: its RAM was not in the state file")
	}
	if !bytes.Equal(v.guestMemory(t), ram) {
		t.Fatal("the restored guest's RAM is not the snapshot's")
	}
	v.guestReadsOriginal(t)
}

// A guest that writes its memory for ever never lets a live save finish on
// its own: at its bound, of time or of passes, it is paused to finish, well
// before the default bound of a minute, and the backup is whole.
func TestSnapshotLiveBound(t *testing.T) {
	// A pause of at most 1 ms: QEMU never finishes such a guest on its own.
	for i, bound := range []PauseBound{{Time: time.Nanosecond, MaxPause: time.Millisecond}, {Passes: 2, MaxPause: time.Millisecond}} {
		t.Run(fmt.Sprintf("%+v", bound), func(t *testing.T) {
			t.Parallel()
			h := openH(t)
			v := planVM(t, fmt.Sprintf("bound%d", i), "", 256, true, 0xa7)
			v.spec.DirtyRAM = true
			v.define(t)
			boots := testenv.SerialBoots(v.spec)
			// From the first pass on: under load, the step may see the copy
			// only once QEMU finished it after one pass, within its own
			// default limit of 300 ms.
			err := h.withDomain(v.spec.Name, func(_ *lv.Connect, d *lv.Domain) error { return d.MigrateSetMaxDowntime(1, 0) })
			if err != nil {
				t.Fatal(err)
			}
			req := v.request("") // tests in parallel would fill the RAM disk
			req.Live, req.Bound = true, bound
			res, err := h.Snapshot(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("save %v restore %v downtime %v total %v", res.Save, res.Restore, res.Downtime, res.Total)
			// No bound on the time: a loaded machine copies 256 MiB slowly,
			// and without the bound the save would never end.
			if !res.Live || !res.Bounded || res.Downtime <= 0 {
				t.Fatalf("result %+v", res)
			}
			v.seedLayout(t, res, 256)
			if !v.running(t, h) || testenv.SerialBoots(v.spec) != boots {
				t.Fatal("the guest did not keep its RAM")
			}
			v.guestReadsOriginal(t)
			v.restoreInstant(t, h, res)
			if testenv.SerialBoots(v.spec) != boots {
				t.Fatal("the restored guest booted")
			}
			v.guestReadsOriginal(t)
		})
	}
}

// guestMemory is 8 MiB of the guest's RAM above 1 MiB, where the boot
// sector's fill starts.
func (v *testVM) guestMemory(t *testing.T) []byte {
	t.Helper()
	b, err := testenv.GuestMemory(lvd.URI, v.spec.Name, v.dir, 1<<20, 8<<20)
	if err != nil || len(b) != 8<<20 {
		t.Fatalf("guest memory: %d bytes, %v", len(b), err)
	}
	return b
}

// restoreInstant does what the restore step does with a snapshot's files:
// the VM stopped, each retained image put back at its disk's path, the
// state file restored with the saved XML.
func (v *testVM) restoreInstant(t *testing.T, h *Hypervisor, res SnapshotResult) {
	t.Helper()
	x, err := os.ReadFile(res.XMLFile)
	if err != nil {
		t.Fatal(err)
	}
	err = h.withDomain(v.spec.Name, func(_ *lv.Connect, d *lv.Domain) error { return d.Destroy() })
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range res.Disks {
		copyFile(t, d.Retained, d.Source)
	}
	if err := h.do(func(c *lv.Connect) error { return c.DomainRestoreFlags(res.StateFile, string(x), 0) }); err != nil {
		t.Fatal(err)
	}
	if !v.running(t, h) {
		t.Fatal("not running after the restore")
	}
}

// A live snapshot that fails before the disks are switched is rolled back
// while the guest runs: it keeps its RAM (it does not boot), runs on its
// own images at their paths, and keeps what it wrote since the instant
// (committed back into them). A disk already switched stays on the overlay
// of its retained image, which the merge settles.
func TestSnapshotLiveRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := ownH(t)
	v := newVM(t, "liverb", "", 64, true, 0x71, 0x72)
	boots := testenv.SerialBoots(v.spec)
	request := func() SnapshotRequest {
		req := v.request(ramDisk)
		req.Live = true
		return req
	}
	for i, step := range []string{"overlay", "xml"} {
		pattern := byte(0x80 + i)
		h.failAt = func(s string) error {
			if s != step {
				return nil
			}
			v.guestWrites(t, "vdb", pattern, 24<<20, 1<<20) // after the instant
			return errors.New("injected")
		}
		_, err := h.Snapshot(ctx, request())
		if !errors.Is(err, ErrSaveXML) && !errors.Is(err, ErrCreateOverlay) || !strings.Contains(err.Error(), "rolled back") {
			t.Fatalf("fail at %s: %v", step, err)
		}
		v.onOwnDisks(t, h, true)
		v.definedOnOwnPaths(t)
		for _, d := range v.spec.Disks {
			if _, err := os.Stat(d.Path + interimSuffix); !os.IsNotExist(err) {
				t.Fatalf("fail at %s: interim overlay left: %v", step, err)
			}
		}
		if _, err := os.Stat(filepath.Join(ramDisk, "liverb.state")); !os.IsNotExist(err) {
			t.Fatalf("fail at %s: state file left: %v", step, err)
		}
		v.guestReads(t, "vdb", pattern, 24<<20, 1<<20)
		offlineReads(t, v.spec.Disks[1].Path, pattern, 24<<20, 1<<20)
		if testenv.SerialBoots(v.spec) != boots {
			t.Fatalf("fail at %s: the guest booted", step)
		}
	}

	// The first of two disks switched, the second fails.
	h.failAt = func(s string) error {
		if s == "switch" {
			return errors.New("injected")
		}
		return nil
	}
	_, err := h.Snapshot(ctx, request())
	if !errors.Is(err, ErrCreateOverlay) || !strings.Contains(err.Error(), "rolled back but for [vda]") {
		t.Fatalf("fail at the switch: %v", err)
	}
	lds, err := h.liveDisks("liverb")
	if err != nil {
		t.Fatal(err)
	}
	vda, vdb := v.spec.Disks[0].Path, v.spec.Disks[1].Path
	retained := filepath.Join(v.retain, filepath.Base(vda))
	if lds["vda"] != (liveDisk{Source: vda, Backing: retained}) || lds["vdb"] != (liveDisk{Source: vdb}) {
		t.Fatalf("after the failed switch: %+v", lds)
	}
	if hostio.Exists(v.record(nil).Path) || testenv.SerialBoots(v.spec) != boots {
		t.Fatal("record left, or the guest booted")
	}
	v.guestReadsOriginal(t)
	h.failAt = nil
	merge := []RetainedDisk{{Target: "vda", Source: vda, Retained: retained}, {Target: "vdb", Source: vdb}} // vdb: nothing to merge
	if _, err := h.Merge(ctx, MergeRequest{Domain: "liverb", Disks: merge}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(retained); err != nil {
		t.Fatal(err)
	}
	res, err := h.Snapshot(ctx, request())
	if err != nil {
		t.Fatal(err)
	}
	v.seedLayout(t, res, 64)
	v.guestReads(t, "vdb", 0x81, 24<<20, 1<<20)
}

// A rollback of a live snapshot crashed just before or just after any one
// of its operations is finished by the re-run: the guest runs on its own
// disks, never stopped, and nothing of the snapshot is left.
func TestLiveRollbackCrashedAtEveryOperationEnds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := newVM(t, "crashlrb", "", 64, true, 0x24)
	boots := testenv.SerialBoots(v.spec)
	request := func(seam *hostio.Seam) SnapshotRequest {
		req := v.request(ramDisk)
		req.Record, req.Live = v.record(seam), true
		return req
	}
	failXML := func(step string) error {
		if step == "xml" {
			return errors.New("injected")
		}
		return nil
	}
	// Count the operations of an undisturbed rollback.
	var ops []string
	from := 0 // operations before the failure
	seam := &hostio.Seam{Trace: func(n int, op string) { ops = append(ops, op) }}
	h := ownH(t)
	h.SetSeam(seam)
	h.failAt = func(step string) error {
		if step == "xml" {
			from = len(ops)
		}
		return failXML(step)
	}
	if _, err := h.Snapshot(ctx, request(seam)); err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("no rollback: %v", err)
	}
	if from == 0 || len(ops)-from < 5 {
		t.Fatalf("%d operations, the rollback from %d: %v", len(ops), from, ops)
	}
	held := 0
	for n := from + 1; n <= len(ops); n++ {
		for _, kind := range []hostio.FaultKind{hostio.CrashBefore, hostio.CrashAfter} {
			f := hostio.Fault{Kind: kind, N: n}
			crashed := make(chan string, 1)
			seam := &hostio.Seam{Crash: func(op string, _ int) {
				crashed <- op
				select {} // the process is gone
			}}
			seam.Arm(f)
			dead, err := Open(lvd.URI)
			if err != nil {
				t.Fatal(err)
			}
			dead.SetSeam(seam)
			dead.failAt = failXML
			done := make(chan error, 1)
			go func() { _, err := dead.Snapshot(ctx, request(seam)); done <- err }()
			var op string
			select {
			case op = <-crashed:
			case err := <-done:
				t.Fatalf("%s: the run ended without reaching its point: %v", f, err)
			}
			// A new process runs the step again.
			h := ownH(t)
			res, err := h.Snapshot(ctx, request(nil))
			if err == nil {
				// Crashed once the rollback was settled: a new snapshot.
				if _, err := h.Merge(ctx, MergeRequest{Domain: "crashlrb", Disks: res.Disks}); err != nil {
					t.Fatal(err)
				}
				if err := os.RemoveAll(v.retain); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(v.retain, 0o755); err != nil {
					t.Fatal(err)
				}
			} else if !strings.Contains(err.Error(), "rolled back") {
				t.Fatalf("%s (%s): re-run: %v", f, op, err)
			}
			v.onOwnDisks(t, h, true)
			v.definedOnOwnPaths(t)
			if _, err := os.Stat(v.spec.Disks[0].Path + interimSuffix); !os.IsNotExist(err) {
				t.Fatalf("%s (%s): interim overlay left: %v", f, op, err)
			}
			if testenv.SerialBoots(v.spec) != boots {
				t.Fatalf("%s (%s): the guest booted", f, op)
			}
			held++
			t.Logf("%s %s: held", f, op)
		}
	}
	t.Logf("crash points of the rollback: %d held", held)
}
