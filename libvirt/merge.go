package libvirt

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	lv "libvirt.org/go/libvirt"

	"github.com/stoneycloud/stoney-conductor/internal/format"
)

// MergeRequest asks to merge each retained image back into its overlay.
type MergeRequest struct {
	Domain        string
	Disks         []RetainedDisk
	BandwidthMiBs uint64 // per disk, 0 = unlimited
	// Progress, if not nil, is told how far the merge of all disks is, in
	// bytes of their virtual sizes, as the block job or qemu-img reports it
	// (a disk merged earlier counts as done). It is called from Merge's
	// goroutine, also when nothing moved since the last call.
	Progress func(done, total int64)
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
// Progress is reported as it goes (req.Progress): a merge may take hours,
// and its caller's deadline must see it move. Starting a pull, a rebase and
// an abort each pass the seam; looking at a job does not.
func (h *Hypervisor) Merge(ctx context.Context, req MergeRequest) (MergeResult, error) {
	var err error
	took := h.timedOnDomain(req.Domain, func() { err = h.merge(ctx, req) })
	return MergeResult{Duration: took}, err
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
	images := make([]format.Image, len(req.Disks))
	var total int64
	for i, d := range req.Disks {
		im, err := format.ImageInfo(ctx, d.Source)
		if err != nil {
			return wrap(ErrMergeFailed, err, "%s", d.Target)
		}
		images[i] = im
		total += im.VirtualSize
	}
	var base int64 // virtual bytes of the disks before this one
	report := func(done int64) {
		if req.Progress != nil {
			req.Progress(base+done, total)
		}
	}
	for i, d := range req.Disks {
		im := images[i]
		if im.BackingFile == "" {
			base += im.VirtualSize
			report(0)
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
			err = h.pull(ctx, req.Domain, d.Target, req.BandwidthMiBs, func(cur, end int64) {
				if end > 0 {
					report(int64(float64(cur) / float64(end) * float64(im.VirtualSize)))
				}
			})
		} else {
			err = h.op("qemu-img rebase "+d.Target, func() error {
				return format.RebaseStandalone(ctx, d.Source, im.VirtualSize, func(share float64) {
					report(int64(share * float64(im.VirtualSize)))
				})
			})
		}
		if err != nil {
			return wrap(ErrMergeFailed, err, "%s", d.Target)
		}
		im, err = format.ImageInfo(ctx, d.Source)
		if err != nil {
			return wrap(ErrMergeFailed, err, "%s", d.Target)
		}
		if im.BackingFile != "" {
			return fmt.Errorf("%w: %s still has backing file %s", ErrMergeFailed, d.Source, im.BackingFile)
		}
		base += images[i].VirtualSize
		report(0)
	}
	if !info.Running {
		return nil
	}
	// libvirt must agree: no backing file left for any merged disk.
	_, desc, err = h.describe(req.Domain, 0)
	if err != nil {
		return err
	}
	// A pull QEMU finished while libvirtd was down stays in libvirt's live
	// definition (waiting does not help); another pull of that disk is a
	// no-op for QEMU and makes libvirt drop the backing file.
	stale := false
	for _, d := range req.Disks {
		if b := desc.Backing[d.Target]; b != "" {
			stale = true
			if err := h.pull(ctx, req.Domain, d.Target, req.BandwidthMiBs, func(int64, int64) {}); err != nil {
				return wrap(ErrMergeFailed, err, "%s: pull again for libvirt's view", d.Target)
			}
		}
	}
	if stale {
		if _, desc, err = h.describe(req.Domain, 0); err != nil {
			return err
		}
	}
	for _, d := range req.Disks {
		if b := desc.Backing[d.Target]; b != "" {
			return fmt.Errorf("%w: libvirt still shows %s backed by %s", ErrMergeFailed, d.Target, b)
		}
	}
	return nil
}

// pull runs (or joins, after a crash) the block pull of one disk and waits
// for it to end, telling progress the job's cur and end at every look.
func (h *Hypervisor) pull(ctx context.Context, domain, target string, bandwidthMiBs uint64, progress func(cur, end int64)) error {
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
		return h.op("block pull "+target, func() error { return d.BlockPull(target, bandwidthMiBs, 0) })
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
		if err == nil {
			progress(int64(job.Cur), int64(job.End))
		}
		select {
		case <-ctx.Done():
			aerr := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
				return h.op("block job abort "+target, func() error { return d.BlockJobAbort(target, 0) })
			})
			return errors.Join(ctx.Err(), aerr)
		case <-time.After(pollInterval):
		}
	}
}
