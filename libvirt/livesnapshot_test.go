package libvirt

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	lv "libvirt.org/go/libvirt"

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
			req := v.request("") // tests in parallel would fill the RAM disk
			req.Live, req.Bound = true, bound
			res, err := h.Snapshot(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("save %v restore %v downtime %v total %v", res.Save, res.Restore, res.Downtime, res.Total)
			if !res.Live || !res.Bounded || res.Downtime <= 0 || res.Save >= 30*time.Second {
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
