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
// the downtime of Snapshot, in save mode and live, with a bare save and
// restore of the same VM, in the same run. Each pause is measured the same
// way: from libvirt's lifecycle events.
//
//	go test -run '^$' -bench SnapshotDowntime -benchtime 3x ./libvirt
func BenchmarkSnapshotDowntime(b *testing.B) {
	ctx := context.Background()
	h := openH(b)
	v := newVM(b, "bench", "", 512, true, 0xbe)
	var save, live, bare time.Duration
	snapshot := func(i int, mode string, liveMode bool) time.Duration {
		v.retain = filepath.Join(v.dir, fmt.Sprintf("retain-%s-%d", mode, i))
		if err := os.MkdirAll(v.retain, 0o755); err != nil {
			b.Fatal(err)
		}
		req := v.request(ramDisk)
		req.Live = liveMode
		res, err := h.Snapshot(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if res.Live != liveMode || res.Bounded {
			b.Fatalf("%s: %+v", mode, res)
		}
		// Undo it for the next round.
		if _, err := h.Merge(ctx, MergeRequest{Domain: "bench", Disks: res.Disks}); err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(v.retain); err != nil {
			b.Fatal(err)
		}
		return res.Downtime
	}
	for i := 0; i < b.N; i++ {
		// Bare: what the hypervisor alone costs.
		state := filepath.Join(ramDisk, "bench-bare.state")
		w := h.watchPause("bench")
		t0 := time.Now()
		err := h.do(func(c *lv.Connect) error {
			dom, err := c.LookupDomainByName("bench")
			if err != nil {
				return err
			}
			defer dom.Free()
			if err := dom.Save(state); err != nil {
				return err
			}
			// Safe without --xml only because no disk changed in between.
			return c.DomainRestore(state)
		})
		d := time.Since(t0)
		if p, ok := w.measure(); ok {
			d = p
		}
		w.close()
		if err != nil {
			b.Fatal(err)
		}
		os.Remove(state)
		bare += d

		save += snapshot(i, "save", false)
		live += snapshot(i, "live", true)
	}
	n := float64(b.N)
	b.ReportMetric(save.Seconds()/n, "ours-downtime-s")
	b.ReportMetric(live.Seconds()/n, "live-downtime-s")
	b.ReportMetric(bare.Seconds()/n, "bare-downtime-s")
	b.ReportMetric(save.Seconds()/bare.Seconds(), "downtime-ratio")
	b.ReportMetric(live.Seconds()/bare.Seconds(), "live-downtime-ratio")
}
