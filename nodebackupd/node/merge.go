package node

import (
	"context"

	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// merge: the live overlays absorb their retained backing images, so that the
// retained files can be moved away. A merge may last hours: it writes its
// progress to the leaf as copies do, and controld's deadline counts from the
// last step forward, so a merge that moves on is never failed for its length
// and one that stalls is.
func (a *Agent) merge(ctx context.Context, j *job) ([]string, error) {
	bw := j.cfg.BandwidthMerge
	if bw < 0 {
		bw = 0
	}
	m := a.newMeter(j, "merge", nil)
	res, err := a.o.Hypervisor.Merge(ctx, libvirt.MergeRequest{
		Domain: j.vm.Name, Disks: j.retained(), BandwidthMiBs: uint64(bw), Progress: m.measured(),
	})
	if err != nil {
		return nil, err
	}
	return []string{"merge: " + seconds(res.Duration)}, nil
}
