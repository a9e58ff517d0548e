package libvirt

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	lv "libvirt.org/go/libvirt"
)

// BenchmarkSnapshotDowntime compares, on one 512 MiB VM whose RAM is full,
// the downtime of Snapshot (save, swap disks, restore, check) with a bare
// save and restore of the same VM, in the same run.
//
//	go test -run '^$' -bench SnapshotDowntime -benchtime 3x ./libvirt
func BenchmarkSnapshotDowntime(b *testing.B) {
	ctx := context.Background()
	h := openH(b)
	v := newVM(b, "bench", "", 512, true, 0xbe)
	var ours, bare time.Duration
	for i := 0; i < b.N; i++ {
		// Bare: what the hypervisor alone costs.
		state := filepath.Join(ramDisk, "bench-bare.state")
		var d time.Duration
		err := h.do(func(c *lv.Connect) error {
			dom, err := c.LookupDomainByName("bench")
			if err != nil {
				return err
			}
			defer dom.Free()
			t0 := time.Now()
			if err := dom.Save(state); err != nil {
				return err
			}
			// Safe without --xml only because no disk changed in between.
			err = c.DomainRestore(state)
			d = time.Since(t0)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(state)
		bare += d

		// Ours, then undo it for the next round.
		v.retain = filepath.Join(v.dir, fmt.Sprintf("retain-%d", i))
		if err := os.MkdirAll(v.retain, 0o755); err != nil {
			b.Fatal(err)
		}
		res, err := h.Snapshot(ctx, v.request(ramDisk))
		if err != nil {
			b.Fatal(err)
		}
		ours += res.Downtime
		if _, err := h.Merge(ctx, MergeRequest{Domain: "bench", Disks: res.Disks}); err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(v.retain); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N)
	b.ReportMetric(ours.Seconds()/n, "ours-downtime-s")
	b.ReportMetric(bare.Seconds()/n, "bare-downtime-s")
	b.ReportMetric(ours.Seconds()/bare.Seconds(), "downtime-ratio")
}
