package libvirt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	lv "libvirt.org/go/libvirt"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// The whole backup on a running VM: what the guest reads must never change,
// the retained image must be the disk as it was, later writes must survive.
func TestSnapshotMergeRunning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := openH(t)
	v := newVM(t, "run1", "", 128, true, 0xab)
	src := v.spec.Disks[0].Path
	before := filepath.Join(v.dir, "before.qcow2")
	copyFile(t, src, before) // the guest never writes on its own

	info, err := h.Domain("run1")
	if err != nil || !info.Running || info.MemoryKiB != 128<<10 || len(info.Disks) != 1 || info.Disks[0].Source != src {
		t.Fatalf("%+v %v", info, err)
	}

	req := v.request(ramDisk)
	res := snapshot(t, h, req)
	t.Logf("save %v restore %v downtime %v total %v", res.Save, res.Restore, res.Downtime, res.Total)
	retained := filepath.Join(v.retain, filepath.Base(src))
	if !res.WasRunning || res.Downtime <= 0 || res.Downtime < res.Save || len(res.Disks) != 1 ||
		res.Disks[0] != (RetainedDisk{Target: "vda", Source: src, Retained: retained}) {
		t.Fatalf("result %+v", res)
	}
	if !v.running(t, h) {
		t.Fatal("VM not running after snapshot")
	}
	v.guestReadsOriginal(t)

	v.seedLayout(t, res, 128)
	if eq, err := format.CompareImages(context.Background(), before, retained); err != nil || !eq {
		t.Fatalf("retained image differs from the disk before the snapshot: %v %v", eq, err)
	}

	// Running it again changes nothing.
	res2, err := h.Snapshot(ctx, req)
	if err != nil || !res2.WasRunning || res2.Disks[0] != res.Disks[0] {
		t.Fatalf("second snapshot: %+v %v", res2, err)
	}
	v.guestReadsOriginal(t)

	// A write after the snapshot goes to the overlay, not the backup.
	v.guestWrites(t, "vda", 0xcd, 20<<20, 1<<20)
	v.guestWrites(t, "vda", 0xce, 4<<20, 64<<10) // inside the old pattern
	if eq, err := format.CompareImages(context.Background(), before, retained); err != nil || !eq {
		t.Fatalf("a guest write reached the retained image: %v %v", eq, err)
	}
	if err := format.CheckImage(context.Background(), retained, ""); err != nil {
		t.Fatal(err)
	}

	mres, err := h.Merge(ctx, MergeRequest{Domain: "run1", Disks: res.Disks})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("merge %v", mres.Duration)
	if im, err := format.ImageInfo(context.Background(), src); err != nil || im.BackingFile != "" {
		t.Fatalf("after merge: %+v %v", im, err)
	}
	if !v.running(t, h) {
		t.Fatal("VM not running after merge")
	}
	v.guestReads(t, "vda", 0xab, 1<<20, 3<<20)
	v.guestReads(t, "vda", 0xce, 4<<20, 64<<10)
	v.guestReads(t, "vda", 0xab, 4<<20+64<<10, 5<<20-64<<10)
	v.guestReads(t, "vda", 0xcd, 20<<20, 1<<20)
	// The retained image no longer serves the VM: it may go.
	if err := os.Rename(retained, retained+".moved"); err != nil {
		t.Fatal(err)
	}
	v.guestReads(t, "vda", 0xab, 1<<20, 3<<20)
	if _, err := h.Merge(ctx, MergeRequest{Domain: "run1", Disks: res.Disks}); err != nil {
		t.Fatalf("second merge: %v", err)
	}
	if err := format.CheckImage(context.Background(), src, ""); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotMergeTwoDisks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := openH(t)
	v := newVM(t, "two", "", 64, true, 0xa1, 0xb2)
	// No RAM disk: the state goes straight into the retain directory.
	res := snapshot(t, h, v.request(""))
	if len(res.Disks) != 2 || !format.IsSaveImage(res.StateFile) {
		t.Fatalf("%+v", res)
	}
	v.guestReadsOriginal(t)
	for _, d := range res.Disks {
		offlineReads(t, d.Retained, map[string]byte{"vda": 0xa1, "vdb": 0xb2}[d.Target], testenv.PatternOffset, testenv.PatternLength)
	}
	v.guestWrites(t, "vdb", 0x3c, 16<<20, 2<<20)
	if _, err := h.Merge(ctx, MergeRequest{Domain: "two", Disks: res.Disks, BandwidthMiBs: 64}); err != nil {
		t.Fatal(err)
	}
	for _, d := range res.Disks {
		if im, err := format.ImageInfo(context.Background(), d.Source); err != nil || im.BackingFile != "" {
			t.Fatalf("%s after merge: %+v %v", d.Target, im, err)
		}
		if err := os.Remove(d.Retained); err != nil {
			t.Fatal(err)
		}
	}
	v.guestReadsOriginal(t)
	v.guestReads(t, "vdb", 0x3c, 16<<20, 2<<20)
}

// A shut-off VM stays shut off through Snapshot and Merge.
func TestSnapshotMergeShutOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := openH(t)
	v := newVM(t, "off", "", 64, false, 0x77)
	req := v.request(ramDisk)
	req.Ownership = Ownership{Owner: "root", Group: "daemon", Perm: 0o660}
	res := snapshot(t, h, req)
	if res.WasRunning || res.Downtime != 0 {
		t.Fatalf("%+v", res)
	}
	if b, err := os.ReadFile(res.StateFile); err != nil || !strings.Contains(string(b), "not running") {
		t.Fatalf("placeholder state file: %q %v", b, err)
	}
	if x, err := os.ReadFile(res.XMLFile); err != nil || !strings.Contains(string(x), "<name>off</name>") {
		t.Fatalf("XML file: %v", err)
	}
	if v.running(t, h) {
		t.Fatal("snapshot started a shut-off VM")
	}
	src := res.Disks[0].Source
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 1 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("overlay owner %d:%d mode %v, want 0:1 (daemon) 0660", st.Uid, st.Gid, fi.Mode())
	}
	offlineReads(t, src, 0x77, testenv.PatternOffset, testenv.PatternLength)
	if _, err := h.Snapshot(ctx, req); err != nil {
		t.Fatalf("second snapshot: %v", err)
	}

	if _, err := h.Merge(ctx, MergeRequest{Domain: "off", Disks: res.Disks}); err != nil {
		t.Fatal(err)
	}
	if v.running(t, h) {
		t.Fatal("merge started a shut-off VM")
	}
	if err := os.Remove(res.Disks[0].Retained); err != nil {
		t.Fatal(err)
	}
	offlineReads(t, src, 0x77, testenv.PatternOffset, testenv.PatternLength)
	// And the guest, once started, reads it too.
	if err := testenv.StartVM(lvd.URI, "off"); err != nil {
		t.Fatal(err)
	}
	v.guestReadsOriginal(t)
}

// Refusals happen before the VM is touched.
func TestSnapshotRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := openH(t)
	v := newVM(t, "ref", "", 64, true, 0x5a)

	if _, err := h.Snapshot(ctx, SnapshotRequest{Domain: "no-such-vm", RetainDir: v.request("").RetainDir, StateName: "s", XMLName: "x", Record: v.record(nil)}); !errors.Is(err, ErrDomainNotFound) {
		t.Errorf("unknown VM: %v", err)
	}
	if _, err := h.Domain("no-such-vm"); !errors.Is(err, ErrDomainNotFound) || IsTransient(err) {
		t.Errorf("Domain of unknown VM: %v", err)
	}
	other := filepath.Join(v.dir, "other.qcow2")
	for name, disks := range map[string][]Disk{
		"other source": {{Target: "vda", Source: other}},
		"other target": {{Target: "vdb", Source: v.spec.Disks[0].Path}},
		"extra disk":   {v.disks()[0], {Target: "vdb", Source: other}},
		"no disk":      nil,
	} {
		req := v.request(ramDisk)
		req.Disks = disks
		if _, err := h.Snapshot(ctx, req); !errors.Is(err, ErrDiskMismatch) {
			t.Errorf("%s: %v", name, err)
		}
	}
	req := v.request(ramDisk)
	req.Ownership.Owner = "no-such-user-here"
	if _, err := h.Snapshot(ctx, req); !errors.Is(err, ErrOwnership) {
		t.Errorf("unknown owner: %v", err)
	}
	req = v.request(ramDisk)
	req.RetainDir = hostio.In(ramDisk).MustJoin("ref-retain") // another filesystem
	if err := os.MkdirAll(req.RetainDir.String(), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Snapshot(ctx, req); !errors.Is(err, ErrRenameImage) {
		t.Errorf("retain on another filesystem: %v", err)
	}
	req = v.request(filepath.Join(v.dir, "no-ram-disk"))
	if _, err := h.Snapshot(ctx, req); !errors.Is(err, ErrInvalidRAMDisk) {
		t.Errorf("missing RAM disk: %v", err)
	}
	if _, err := h.Merge(ctx, MergeRequest{Domain: "ref", Disks: []RetainedDisk{{Target: "vda", Source: other}}}); !errors.Is(err, ErrDiskMismatch) {
		t.Errorf("merge with other disks: %v", err)
	}
	v.onOwnDisks(t, h, true)
}

// No room for the state file: refused up front, VM untouched.
func TestSnapshotNoSpace(t *testing.T) {
	t.Parallel()
	h := openH(t)
	dir := filepath.Join(smallFS, "full")
	v := newVM(t, "full", dir, 128, true, 0x42)
	v.snapshotRefused(t, h, tinyRAM, ErrNoSpace)
}

// A save that fails on a full filesystem leaves the VM running (trap 3):
// nothing else may be touched.
func TestSnapshotSaveFails(t *testing.T) {
	t.Parallel()
	h := ownH(t)
	h.stateSize = func(format.Domain) uint64 { return 1 << 20 } // wrong on purpose
	v := newVM(t, "enospc", "", 64, true, 0x99)
	v.snapshotRefused(t, h, tinyRAM, ErrSaveFailed)
	if _, err := os.Stat(filepath.Join(tinyRAM, "enospc.state")); !os.IsNotExist(err) {
		t.Errorf("partial state file left: %v", err)
	}
}

// A failure after the VM went down is rolled back: it runs on its own disks
// again, and a later Snapshot works.
func TestSnapshotRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := ownH(t)
	v := newVM(t, "rb", "", 64, true, 0x6b, 0x6c)
	for _, tc := range []struct {
		step string
		want error
	}{
		{"overlay", ErrCreateOverlay}, // after the first disk's overlay
		{"restore", ErrRestoreFailed}, // restore refused
		{"verify", ErrRestoreFailed},  // restored, but on the wrong chain
	} {
		h.failAt = injectAt(tc.step)
		_, err := h.Snapshot(ctx, v.request(ramDisk))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "rolled back") {
			t.Fatalf("fail at %s: %v", tc.step, err)
		}
		v.onOwnDisks(t, h, true)
		if _, err := os.Stat(filepath.Join(ramDisk, "rb.state")); !os.IsNotExist(err) {
			t.Fatalf("fail at %s: state file left: %v", tc.step, err)
		}
	}
	// The VM goes on writing to its own disks.
	v.guestWrites(t, "vdb", 0x1f, 24<<20, 1<<20)
	h.failAt = nil
	res := snapshot(t, h, v.request(ramDisk))
	v.guestReadsOriginal(t)
	v.guestReads(t, "vdb", 0x1f, 24<<20, 1<<20)
	offlineReads(t, res.Disks[1].Retained, 0x1f, 24<<20, 1<<20)
}

// A snapshot crashed just before or just after any one of its operations,
// then run again by a fresh process, ends with the VM running on a valid
// chain (overlay on the retained image) and the guest reading its data.
func TestSnapshotCrashedAtEveryOperationEndsRunningOnAValidChain(t *testing.T) {
	t.Parallel()
	v := newVM(t, "crashes", "", 64, true, 0x21)
	crashAtEveryOperation(t, v, func(r *SnapshotRequest) {}, "")
}

// The same for a live save.
func TestLiveSnapshotCrashedAtEveryOperationEndsRunningOnAValidChain(t *testing.T) {
	t.Parallel()
	v := newVM(t, "crashlive", "", 64, true, 0x22)
	crashAtEveryOperation(t, v, func(r *SnapshotRequest) { r.Live = true }, "")
}

// A crash just before or after the bound ends a live save: the guest
// dirties its memory for ever, so a copy left running can only end by the
// re-run. (Whether a run reaches the bound before QEMU finishes on its own
// is a race: a run that does not is tried again.)
func TestLiveSnapshotCrashedAtItsBoundEndsRunningOnAValidChain(t *testing.T) {
	t.Parallel()
	v := planVM(t, "crashbound", "", 256, true, 0x23)
	v.spec.DirtyRAM = true
	v.define(t)
	crashAtEveryOperation(t, v, func(r *SnapshotRequest) {
		r.Live, r.Bound = true, PauseBound{Time: time.Nanosecond, MaxPause: time.Millisecond}
		r.RAMDisk = hostio.Path{} // its passes may outgrow the RAM disk the other tests share
	}, "end the live save")
}

// crashAtEveryOperation crashes the snapshot of v at each operation in
// turn (only: at the one named so) and runs it again.
func crashAtEveryOperation(t *testing.T, v *testVM, mode func(*SnapshotRequest), only string) {
	ctx := context.Background()
	name, src := v.spec.Name, v.spec.Disks[0].Path
	request := func(seam *hostio.Seam) SnapshotRequest {
		req := v.request(ramDisk)
		req.Record = v.record(seam)
		mode(&req)
		return req
	}
	points := func(ops []string) []int {
		if only == "" {
			return pointsToRun(len(ops))
		}
		for i, op := range ops {
			if strings.HasPrefix(op, only) {
				return []int{i + 1}
			}
		}
		t.Fatalf("no operation %q in %v", only, ops)
		return nil
	}
	reset := func(h *Hypervisor, res SnapshotResult) {
		t.Helper()
		if _, err := h.Merge(ctx, MergeRequest{Domain: name, Disks: res.Disks}); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(v.retain); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(v.retain, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Count the operations of an undisturbed run; one that missed the
	// operation asked for (QEMU finished a live save before its bound) is
	// run again, as the points are.
	var ops []string
	for try := 1; ; try++ {
		ops = nil
		seam := &hostio.Seam{Trace: func(n int, op string) { ops = append(ops, op) }}
		h := ownH(t)
		h.SetSeam(seam)
		res, err := h.Snapshot(ctx, request(seam))
		if err != nil {
			t.Fatal(err)
		}
		h.SetSeam(nil) // count the snapshot's own: reset's merge passes the seam too
		reset(h, res)
		if only == "" || try == 3 || slices.ContainsFunc(ops, func(op string) bool { return strings.HasPrefix(op, only) }) {
			break
		}
	}
	if len(ops) < 15 {
		t.Fatalf("only %d operations pass the seam: %v", len(ops), ops)
	}
	held, want := 0, 0
	for _, n := range points(ops) {
		for _, kind := range []hostio.FaultKind{hostio.CrashBefore, hostio.CrashAfter} {
			want++
			f := hostio.Fault{Kind: kind, N: n}
			var op string
			for try := 1; op == ""; try++ {
				crashed := make(chan string, 1)
				seam := &hostio.Seam{Crash: func(op string, _ int) {
					crashed <- op
					select {} // the process is gone: nothing after this runs
				}}
				seam.Arm(f)
				dead, err := Open(lvd.URI)
				if err != nil {
					t.Fatal(err)
				}
				dead.SetSeam(seam)
				done := make(chan error, 1)
				go func() { _, err := dead.Snapshot(ctx, request(seam)); done <- err }()
				select {
				case op = <-crashed:
					if only != "" && !strings.HasPrefix(op, only) && try < 3 {
						// Another operation has this number in this run:
						// settle it and try again.
						h := ownH(t)
						res, err := h.Snapshot(ctx, request(nil))
						if err != nil {
							t.Fatalf("%s (%s): re-run: %v", f, op, err)
						}
						reset(h, res)
						op = ""
					}
				case err := <-done:
					if only == "" || try == 3 || err != nil {
						t.Fatalf("%s: the run ended without reaching its point: %v", f, err)
					}
					h := ownH(t)
					res, _ := h.Snapshot(ctx, request(nil)) // settles nothing: the run was whole
					reset(h, res)
				}
			}
			// A new process runs the step again.
			h := ownH(t)
			res, err := h.Snapshot(ctx, request(nil))
			if err != nil {
				t.Fatalf("%s (%s): re-run: %v", f, op, err)
			}
			if !v.running(t, h) {
				t.Fatalf("%s (%s): VM not running", f, op)
			}
			if im, err := format.ImageInfo(context.Background(), src); err != nil || im.BackingFile != res.Disks[0].Retained {
				t.Fatalf("%s (%s): %s is not an overlay of its retained image: %+v %v", f, op, src, im, err)
			}
			if err := format.CheckImage(context.Background(), res.Disks[0].Retained, ""); err != nil {
				t.Fatalf("%s (%s): %v", f, op, err)
			}
			if hostio.Exists(v.record(nil).Path) || hostio.Exists(hostio.In(ramDisk).MustJoin(name+".state")) {
				t.Fatalf("%s (%s): record or RAM disk state left", f, op)
			}
			v.guestReadsOriginal(t)
			reset(h, res)
			if info, err := h.Domain(name); err != nil || info.State != "running" {
				t.Fatalf("%s (%s): the guest is %q after the re-run (%v)", f, op, info.State, err)
			}
			held++
			t.Logf("%s %s: held", f, op)
		}
	}
	t.Logf("crash points: %d held of %d", held, want)
}

// After a completed snapshot the guest shuts itself down; the step run
// again (a resumed step, a tidy) must not start it from the old memory.
func TestShutDownGuestIsNeverResumedFromAnOldState(t *testing.T) {
	t.Parallel()
	h := openH(t)
	v := newVM(t, "shut", "", 64, true, 0x41)
	req := v.request(ramDisk)
	snapshot(t, h, req)
	destroy(t, "shut")
	res := snapshot(t, h, req)
	settle := req
	settle.SettleOnly = true
	snapshot(t, h, settle)
	if v.running(t, h) {
		t.Fatal("a VM its owner shut down was started from an old state")
	}
	if !res.WasRunning || !format.IsSaveImage(res.StateFile) {
		t.Fatalf("the backup lost its state: %+v", res)
	}
}

// A save image planted at the state file's path on the RAM disk, made by
// another VM, is never restored (with its own XML) by the root daemon.
func TestPlantedSaveImageIsNeverRestored(t *testing.T) {
	t.Parallel()
	h := openH(t)
	other := newVM(t, "plantsrc", "", 64, true, 0x51)
	v := newVM(t, "planted", "", 64, false, 0x52)
	save(t, "plantsrc", filepath.Join(ramDisk, "planted.state"))
	res := snapshot(t, h, v.request(ramDisk))
	if other.running(t, h) || v.running(t, h) || res.WasRunning {
		t.Fatalf("the planted image was restored: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(ramDisk, "planted.state")); !os.IsNotExist(err) {
		t.Fatalf("planted image left: %v", err)
	}
	offlineReads(t, res.Disks[0].Source, 0x52, testenv.PatternOffset, testenv.PatternLength)
}

// A state file left on the RAM disk (a move cut short, no record naming it)
// is not resumed by the next backup of the VM while it is shut off.
func TestStrayStateOnRAMDiskIsNotResumed(t *testing.T) {
	t.Parallel()
	h := openH(t)
	v := newVM(t, "stray", "", 64, true, 0x61)
	save(t, "stray", filepath.Join(ramDisk, "stray.state"))
	res := snapshot(t, h, v.request(ramDisk))
	if v.running(t, h) || res.WasRunning {
		t.Fatalf("a stray state file was resumed: %+v", res)
	}
	if b, err := os.ReadFile(res.StateFile); err != nil || !strings.Contains(string(b), "not running") {
		t.Fatalf("state file %q %v", b, err)
	}
}

// A disk whose file is named like the backup's own XML would be retained
// beside it and overwritten by it: refused before anything is touched.
func TestDiskNamedLikeBackupFilesIsRefused(t *testing.T) {
	t.Parallel()
	h := openH(t)
	v := newVMWithDisk(t, "named", "named.xml", true, 0x71)
	v.snapshotRefused(t, h, ramDisk, ErrRenameImage)
}

// The state file is the guest's RAM: no group or world read; the XML is
// never world-readable, whatever mode the images get.
func TestStateFileIsNotGroupReadable(t *testing.T) {
	t.Parallel()
	h := openH(t)
	v := newVM(t, "modes", "", 64, false, 0x81)
	req := v.request(ramDisk)
	req.Ownership.Perm = 0o664
	res := snapshot(t, h, req)
	for f, want := range map[string]os.FileMode{res.StateFile: 0o600, res.XMLFile: 0o660} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", f, fi.Mode(), err, want)
		}
	}
}

func destroy(t *testing.T, name string) {
	t.Helper()
	err := sharedH.withDomain(name, func(_ *lv.Connect, d *lv.Domain) error { return d.Destroy() })
	if err != nil {
		t.Fatal(err)
	}
}

// save saves a running domain to path with its own XML, as a leftover or a
// planted image would be.
func save(t *testing.T, name, path string) {
	t.Helper()
	err := sharedH.withDomain(name, func(_ *lv.Connect, d *lv.Domain) error { return d.Save(path) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

// A libvirtd restart drops the connection: the error says transient, and
// the Hypervisor reconnects by itself. Not parallel: it restarts libvirtd.
func TestReconnectAfterLibvirtdRestart(t *testing.T) {
	h := openH(t)
	if _, err := h.Domain("nobody"); !errors.Is(err, ErrDomainNotFound) {
		t.Fatal(err)
	}
	if err := lvd.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := h.Domain("nobody")
		if errors.Is(err, ErrDomainNotFound) {
			break
		}
		if !IsTransient(err) || time.Now().After(deadline) {
			t.Fatalf("after restart: %v (transient %v)", err, IsTransient(err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A save cut short with its memory (libvirtd died with it, the image is not
// complete) must not leave the VM stopped: the re-run boots it from its own
// disks, which nothing touched yet, and says that its memory was lost. So
// must an image that says it is complete but cannot be resumed.
func TestVMWhoseSaveWasCutShortIsStartedAgain(t *testing.T) {
	t.Run("unfinished image", func(t *testing.T) {
		cutShortSave(t, "cutshort", "LibvirtQemudPart", ErrSaveFailed)
	})
	t.Run("complete header, data cut", func(t *testing.T) {
		cutShortSave(t, "cutdata", "", ErrRestoreFailed)
	})
}

// cutShortSave crashes a snapshot right after the save, cuts the state
// file to 4 KiB (writing magic over its header, if given) and runs it again.
func cutShortSave(t *testing.T, name, magic string, want error) {
	ctx := context.Background()
	v := newVM(t, name, "", 64, true, 0x2c)
	// Crash right after the save: the VM is shut off, its memory in the image.
	ops := v.snapshotOps(t, "")
	save := slices.IndexFunc(ops, func(op string) bool { return strings.HasPrefix(op, "save ") })
	if save < 0 {
		t.Fatalf("no save among %v", ops)
	}
	v.crashedSnapshot(t, "", hostio.Fault{Kind: hostio.CrashAfter, N: save + 1})
	h := ownH(t)
	if v.running(t, h) {
		t.Fatal("the VM runs after its save: the test did not reach its point")
	}
	state := filepath.Join(v.retain, name+".state")
	if err := os.Truncate(state, 4096); err != nil {
		t.Fatal(err)
	}
	if magic != "" { // as libvirt leaves an image it never finished
		f, err := os.OpenFile(state, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte(magic), 0)
		f.Close()
	}
	_, err := h.Snapshot(ctx, v.request(""))
	if !errors.Is(err, want) {
		t.Fatalf("re-run: %v, want %v", err, want)
	}
	if !v.running(t, h) {
		t.Fatal("the VM was left stopped")
	}
	v.guestReadsOriginal(t)
	if hostio.Exists(v.record(nil).Path) {
		t.Error("the record of a settled snapshot is left")
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the cut-short state file is left: %v", err)
	}
}

// snapshotRefused checks that a snapshot of v (state on ramDisk) is refused
// with want and leaves the VM running on its own disks.
func (v *testVM) snapshotRefused(t *testing.T, h *Hypervisor, ramDisk string, want error) {
	t.Helper()
	if _, err := h.Snapshot(context.Background(), v.request(ramDisk)); !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	v.onOwnDisks(t, h, true)
}

// snapshotOps is the operations an undisturbed snapshot of v (state on
// ramDisk) passes the seam with; the backup is merged and gone after it.
func (v *testVM) snapshotOps(t *testing.T, ramDisk string) []string {
	t.Helper()
	var ops []string
	seam := &hostio.Seam{Trace: func(_ int, op string) { ops = append(ops, op) }}
	h := ownH(t)
	h.SetSeam(seam)
	req := v.request(ramDisk)
	req.Record = v.record(seam)
	res := snapshot(t, h, req)
	h.SetSeam(nil) // count the snapshot's own: the merge passes the seam too
	v.resetRetain(t, h, res)
	return ops
}

// resetRetain merges the backup res back and empties the retain directory,
// for the next snapshot of v to start afresh.
func (v *testVM) resetRetain(t *testing.T, h *Hypervisor, res SnapshotResult) {
	t.Helper()
	if _, err := h.Merge(context.Background(), MergeRequest{Domain: v.spec.Name, Disks: res.Disks}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(v.retain); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(v.retain, 0o755); err != nil {
		t.Fatal(err)
	}
}

// crashedSnapshot runs a snapshot of v (state on ramDisk) by a process
// that dies at f, and returns the operation it died at.
func (v *testVM) crashedSnapshot(t *testing.T, ramDisk string, f hostio.Fault) string {
	t.Helper()
	seam, crashed := crashSeam(f)
	dead := ownH(t)
	dead.SetSeam(seam)
	req := v.request(ramDisk)
	req.Record = v.record(seam)
	op, err := runUntilCrash(func() error {
		_, err := dead.Snapshot(context.Background(), req)
		return err
	}, crashed)
	if op == "" {
		t.Fatalf("%s: the run ended without reaching its point: %v", f, err)
	}
	return op
}
