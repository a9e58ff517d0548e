package libvirt

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// A backup restored: the guest reads the data of the backup again, not what
// it wrote since, and runs from the saved state.
func TestRestoreRunning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := openH(t)
	v := newVM(t, "rest", "", 64, true, 0xab)
	res, err := h.Snapshot(ctx, v.request(ramDisk))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Merge(ctx, MergeRequest{Domain: "rest", Disks: res.Disks}); err != nil {
		t.Fatal(err)
	}
	v.guestWrites(t, "vda", 0xee, testenv.PatternOffset, 2<<20)
	v.guestReads(t, "vda", 0xee, testenv.PatternOffset, 2<<20)

	req := RestoreRequest{Domain: "rest", Disks: res.Disks, StateFile: res.StateFile, XMLFile: res.XMLFile,
		Ownership: Ownership{Perm: 0o600}}
	bad := req
	bad.Disks = []RetainedDisk{{Target: "vda", Source: res.Disks[0].Source, Retained: filepath.Join(v.dir, "none.qcow2")}}
	if _, err := h.Restore(ctx, bad); !errors.Is(err, ErrMissingFile) {
		t.Fatalf("restore without the image: %v", err)
	}
	v.guestReads(t, "vda", 0xee, testenv.PatternOffset, 2<<20) // untouched

	rres, err := h.Restore(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !rres.Running || !v.running(t, h) {
		t.Fatalf("%+v", rres)
	}
	v.guestReadsOriginal(t)
	src := res.Disks[0].Source
	if _, err := os.Stat(src + preRestore); !os.IsNotExist(err) {
		t.Fatalf("old image left: %v", err)
	}
	if fi, err := os.Stat(src); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("restored image: %v %v", fi, err)
	}
}

func TestRestoreShutOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := openH(t)
	v := newVM(t, "restoff", "", 64, false, 0x31)
	res, err := h.Snapshot(ctx, v.request(""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Merge(ctx, MergeRequest{Domain: "restoff", Disks: res.Disks}); err != nil {
		t.Fatal(err)
	}
	src := res.Disks[0].Source
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x32 1M 1M", src).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	rres, err := h.Restore(ctx, RestoreRequest{Domain: "restoff", Disks: res.Disks, StateFile: res.StateFile, XMLFile: res.XMLFile})
	if err != nil {
		t.Fatal(err)
	}
	if rres.Running || v.running(t, h) {
		t.Fatal("a VM backed up shut off was started")
	}
	offlineReads(t, src, 0x31, testenv.PatternOffset, testenv.PatternLength)
}

// A restore that fails after the point of no return puts the previous VM back
// exactly: its disks, its definition, and its RAM state resumed from the park
// directory (no reboot). ForceStart boots the restored VM from its XML instead.
func TestRestoreFailureGoesBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := ownH(t)
	v := newVM(t, "restback", "", 64, true, 0xab)
	if err := testenv.WaitGuestFilled(v.spec, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	res, err := h.Snapshot(ctx, v.request(ramDisk))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Merge(ctx, MergeRequest{Domain: "restback", Disks: res.Disks}); err != nil {
		t.Fatal(err)
	}
	v.guestWrites(t, "vda", 0xee, testenv.PatternOffset, 2<<20)
	boots := func() int {
		b, _ := os.ReadFile(v.spec.SerialPath())
		return strings.Count(string(b), "FILLED")
	}
	before := boots()
	park := t.TempDir()
	req := RestoreRequest{Domain: "restback", Disks: res.Disks, StateFile: res.StateFile, XMLFile: res.XMLFile, ParkDir: park}

	h.failAt = func(step string) error {
		if step == "restore-start" {
			return errors.New("injected")
		}
		return nil
	}
	if _, err := h.Restore(ctx, req); !errors.Is(err, ErrRestoreFailed) || !strings.Contains(err.Error(), "put back") {
		t.Fatalf("failed restore: %v", err)
	}
	if !v.running(t, h) {
		t.Fatal("previous VM not running after a failed restore")
	}
	v.guestReads(t, "vda", 0xee, testenv.PatternOffset, 2<<20) // its own, newer data
	if n := boots(); n != before {
		t.Fatalf("previous VM rebooted (%d boots, was %d): its state was not resumed", n, before)
	}
	if _, err := os.Stat(res.Disks[0].Retained); err != nil {
		t.Fatalf("the backed-up image is gone after a failed restore: %v", err)
	}
	if _, err := os.Stat(res.Disks[0].Source + preRestore); !os.IsNotExist(err) {
		t.Fatalf("pre-restore image left: %v", err)
	}

	// The same restore, now working, then nothing parked is left.
	h.failAt = nil
	rres, err := h.Restore(ctx, req)
	if err != nil || !rres.Running || !rres.FromState {
		t.Fatalf("restore: %+v %v", rres, err)
	}
	v.guestReadsOriginal(t)
	if es, _ := os.ReadDir(park); len(es) != 0 {
		t.Fatalf("park directory holds %d files after a restore", len(es))
	}
}
