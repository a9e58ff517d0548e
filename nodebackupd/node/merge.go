package node

import (
	"context"

	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// merge: the live overlays absorb their retained backing images, so that the
// retained files can be moved away.
func (a *Agent) merge(ctx context.Context, j *job) ([]string, error) {
	bw := j.cfg.BandwidthMerge
	if bw < 0 {
		bw = 0
	}
	res, err := a.o.Hypervisor.Merge(ctx, libvirt.MergeRequest{
		Domain: j.vm.Name, Disks: j.retained(), BandwidthMiBs: uint64(bw),
	})
	if err != nil {
		return nil, err
	}
	return []string{"merge: " + seconds(res.Duration)}, nil
}
