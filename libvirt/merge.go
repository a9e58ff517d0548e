package libvirt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	lv "libvirt.org/go/libvirt"
)

// MergeRequest asks to merge each retained image back into its overlay.
type MergeRequest struct {
	Domain        string
	Disks         []RetainedDisk
	BandwidthMiBs uint64 // per disk, 0 = unlimited
}

// MergeResult reports how long Merge took.
type MergeResult struct {
	Duration time.Duration
}

// pollInterval is how often a block job is looked at.
const pollInterval = 100 * time.Millisecond

// Merge makes each disk's live image standalone again, so that the retained
// images can leave. A running VM pulls the data into its overlays with the
// BlockPull API (never HMP block_stream, which fails while reporting
// success) and keeps running; a shut-off VM is merged offline with
// `qemu-img rebase -b ""` and never started. An image that has no backing
// file is already merged, so Merge can be run again. When ctx ends, a
// running pull is aborted; the image stays consistent and backed.
func (h *Hypervisor) Merge(ctx context.Context, req MergeRequest) (MergeResult, error) {
	start := time.Now()
	unlock := h.lockDomain(req.Domain)
	defer unlock()
	err := h.merge(ctx, req)
	return MergeResult{Duration: time.Since(start)}, err
}

func (h *Hypervisor) merge(ctx context.Context, req MergeRequest) error {
	info, desc, err := h.describe(req.Domain, 0)
	if err != nil {
		return err
	}
	var want []Disk
	for _, d := range req.Disks {
		want = append(want, Disk{Target: d.Target, Source: d.Source})
	}
	if err := sameDisks(want, desc.Disks); err != nil {
		return err
	}
	for _, d := range req.Disks {
		im, err := imageInfo(ctx, d.Source)
		if err != nil {
			return wrap(ErrMergeFailed, err, "%s", d.Target)
		}
		if im.BackingFile == "" {
			continue // merged
		}
		if filepath.Clean(im.BackingFile) != filepath.Clean(d.Retained) {
			return fmt.Errorf("%w: %s is backed by %s, not by the retained %s", ErrMergeFailed, d.Source, im.BackingFile, d.Retained)
		}
		if info.Running {
			// A VM that does not see the backing file reads zeros where the
			// overlay is empty; a pull would then write those zeros for good.
			if got := desc.Backing[d.Target]; filepath.Clean(got) != filepath.Clean(d.Retained) {
				return fmt.Errorf("%w: %s runs on %s without its backing file %s", ErrMergeFailed, req.Domain, d.Source, d.Retained)
			}
			err = h.pull(ctx, req.Domain, d.Target, req.BandwidthMiBs)
		} else {
			err = rebaseStandalone(ctx, d.Source)
		}
		if err != nil {
			return wrap(ErrMergeFailed, err, "%s", d.Target)
		}
		im, err = imageInfo(ctx, d.Source)
		if err != nil {
			return wrap(ErrMergeFailed, err, "%s", d.Target)
		}
		if im.BackingFile != "" {
			return fmt.Errorf("%w: %s still has backing file %s", ErrMergeFailed, d.Source, im.BackingFile)
		}
	}
	if !info.Running {
		return nil
	}
	// libvirt must agree: no backing file left for any merged disk.
	_, desc, err = h.describe(req.Domain, 0)
	if err != nil {
		return err
	}
	for _, d := range req.Disks {
		if b := desc.Backing[d.Target]; b != "" {
			return fmt.Errorf("%w: libvirt still shows %s backed by %s", ErrMergeFailed, d.Target, b)
		}
	}
	return nil
}

// pull runs (or joins, after a crash) the block pull of one disk and waits
// for it to end.
func (h *Hypervisor) pull(ctx context.Context, domain, target string, bandwidthMiBs uint64) error {
	err := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
		job, err := d.GetBlockJobInfo(target, 0)
		if err != nil {
			return err
		}
		if job.Type == lv.DOMAIN_BLOCK_JOB_TYPE_PULL {
			return nil // still running from an earlier call
		}
		if job.Type != lv.DOMAIN_BLOCK_JOB_TYPE_UNKNOWN {
			return fmt.Errorf("another block job (type %d) runs on %s", job.Type, target)
		}
		return d.BlockPull(target, bandwidthMiBs, 0)
	})
	if err != nil {
		return err
	}
	for {
		var job *lv.DomainBlockJobInfo
		err := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
			var err error
			job, err = d.GetBlockJobInfo(target, 0)
			return err
		})
		if err != nil && !IsTransient(err) {
			return err
		}
		if err == nil && job.Type == lv.DOMAIN_BLOCK_JOB_TYPE_UNKNOWN {
			return nil // ended; the caller checks that it worked
		}
		select {
		case <-ctx.Done():
			aerr := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
				return d.BlockJobAbort(target, 0)
			})
			return errors.Join(ctx.Err(), aerr)
		case <-time.After(pollInterval):
		}
	}
}
