package libvirt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	lv "libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// A live snapshot switches each disk while the guest runs, in two moves,
// because libvirt 9.0 cannot put an overlay at the path of the image QEMU
// has open (docs/live-snapshots.md):
//
//  1. the external snapshot (memory and disks at one instant) makes a new
//     interim overlay the running image, beside the disk;
//  2. the image, read-only from then on, is renamed into RetainDir (QEMU
//     keeps its descriptor), the seed's overlay created at its path, and a
//     shallow block copy moves the interim's few writes onto that overlay
//     and pivots: QEMU and libvirt then read the overlay at the disk's own
//     path, backed by the retained image opened by its new name.

// Disk phases of the live switch, after dkOverlay.
const (
	dkCopying  = "copying"  // the interim's block copy onto the overlay announced
	dkSwitched = "switched" // the guest runs on the overlay at its path
)

// interimSuffix names a disk's interim overlay, beside it.
const interimSuffix = ".interim"

// liveDisk is what libvirt says a running disk reads from.
type liveDisk struct {
	Source, Backing string
	Mirror          bool // a block job (copy or commit) has a destination
	Ready           bool // ... that may be pivoted to
}

// liveDisks reads the running domain's disks, by target.
func (h *Hypervisor) liveDisks(domain string) (map[string]liveDisk, error) {
	var x string
	err := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
		var err error
		x, err = d.GetXMLDesc(0)
		return err
	})
	if err != nil {
		return nil, err
	}
	disks, err := domainDisks(x)
	if err != nil {
		return nil, err
	}
	out := map[string]liveDisk{}
	for _, d := range disks {
		if d.Target == nil || d.Source == nil || d.Source.File == nil {
			continue
		}
		ld := liveDisk{Source: d.Source.File.File}
		if bs := d.BackingStore; bs != nil && bs.Source != nil && bs.Source.File != nil {
			ld.Backing = bs.Source.File.File
		}
		if m := d.Mirror; m != nil {
			ld.Mirror, ld.Ready = true, m.Ready == "yes"
		}
		out[d.Target.Dev] = ld
	}
	return out, nil
}

// domainDisks are the disks of a domain XML.
func domainDisks(x string) ([]libvirtxml.DomainDisk, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(x); err != nil {
		return nil, err
	}
	if dom.Devices == nil {
		return nil, nil
	}
	return dom.Devices.Disks, nil
}

// liveSnapshotXML is the external snapshot that saves the memory to file and
// makes each recorded disk's interim overlay its running image; any other
// disk of the domain XML x is left alone.
func liveSnapshotXML(x, file string, disks []diskRecord) (string, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(x); err != nil {
		return "", err
	}
	interim := map[string]string{}
	for _, d := range disks {
		interim[d.Target] = d.Interim
	}
	snap := libvirtxml.DomainSnapshot{
		Memory: &libvirtxml.DomainSnapshotMemory{Snapshot: "external", File: file},
		Disks:  &libvirtxml.DomainSnapshotDisks{},
	}
	if dom.Devices != nil {
		for _, d := range dom.Devices.Disks {
			if d.Target == nil {
				continue
			}
			sd := libvirtxml.DomainSnapshotDisk{Name: d.Target.Dev, Snapshot: "no"}
			if p, ok := interim[d.Target.Dev]; ok {
				sd.Snapshot = "external"
				sd.Driver = &libvirtxml.DomainDiskDriver{Type: "qcow2"}
				sd.Source = &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: p}}
			}
			snap.Disks.Disks = append(snap.Disks.Disks, sd)
		}
	}
	return snap.Marshal()
}

// planInterims names each disk's interim overlay, beside it; a file there
// already is not ours to replace.
func (s *snap) planInterims() error {
	for i := range s.rec.Disks {
		d := &s.rec.Disks[i]
		d.Interim = d.Source + interimSuffix
		p, err := diskPath(d.Interim)
		if err != nil {
			return err
		}
		if hostio.Exists(p) {
			return fmt.Errorf("%w: %s already exists", ErrRenameImage, d.Interim)
		}
	}
	return nil
}

// liveSaveFailed settles a live snapshot that failed (saveFailed's err),
// its job ended. libvirt leaves the guest running on its own disks, or,
// when a call of ours failed after the snapshot completed, on its interim
// overlays: those are committed back.
func (s *snap) liveSaveFailed(ctx context.Context, err error) error {
	err = s.settleLiveSave(ctx, err)
	// A snapshot that failed as QEMU resumed the guest leaves it paused.
	if perr := s.h.unpause(s.req.Domain); perr != nil {
		return fmt.Errorf("%w (and the guest stays paused: %v)", err, perr)
	}
	return err
}

// settleLiveSave is liveSaveFailed but for a guest left paused.
func (s *snap) settleLiveSave(ctx context.Context, err error) error {
	taken, terr := s.snapshotTaken()
	if terr != nil {
		return fmt.Errorf("%w (and %v)", err, terr)
	}
	if taken {
		if rerr := s.liveRollback(ctx, err); rerr != nil {
			return rerr
		}
		return fmt.Errorf("%w (rolled back: the VM runs on its own disks)", err)
	}
	if derr := s.dropLive(); derr != nil {
		return fmt.Errorf("%w (and %v)", err, derr)
	}
	return err
}

// dropLive ends a live snapshot that never happened: its files go, and its
// record.
func (s *snap) dropLive() error {
	if err := s.dropUnused(); err != nil {
		return err
	}
	return s.settled()
}

// dropUnused removes the files of a live snapshot that never happened.
func (s *snap) dropUnused() error {
	for _, d := range s.rec.Disks {
		if d.Interim == "" {
			continue
		}
		p, err := diskPath(d.Interim)
		if err != nil {
			return err
		}
		if err := s.h.seam.Remove(p); err != nil {
			return wrap(ErrCreateOverlay, err, "%s", d.Interim)
		}
	}
	if err := s.h.seam.Remove(s.stateFile()); err != nil {
		return wrap(ErrStateFile, err, "remove a partial state file")
	}
	return nil
}

// resumeLive continues a live snapshot from its record and what libvirt
// says the guest's disks read.
func (s *snap) resumeLive(ctx context.Context) (SnapshotResult, error) {
	rec := &s.rec
	if rec.Phase == phSaving {
		// A live save left by a process that died copies on, for ever if
		// its guest dirties memory faster: end it, the guest runs on.
		if err := s.h.abortJob(s.req.Domain); err != nil {
			return s.res, err
		}
	}
	if err := s.h.waitNoJob(ctx, s.req.Domain); err != nil {
		return s.res, err
	}
	st, err := s.h.domainState(ctx, s.req.Domain)
	if err != nil {
		return s.res, err
	}
	taken := false
	if rec.at(phSaving) {
		if taken, err = s.snapshotTaken(); err != nil {
			return s.res, err
		}
	}
	switch {
	case !rec.at(phSaving) || (rec.Phase == phSaving && !taken):
		// The snapshot never happened: the VM is on its own disks.
		if err := s.dropUnused(); err != nil {
			return s.res, err
		}
		if s.req.SettleOnly || !st.active {
			return s.restart(ctx)
		}
		return s.running(ctx)
	case !st.active:
		return s.res, fmt.Errorf("%w: %s was shut down while its disks were switched live (%s)", ErrInconsistent, s.req.Domain, rec.Phase)
	case rec.Phase == phSaving:
		if err := s.save(phSaved); err != nil {
			return s.res, err
		}
	}
	return s.afterSave(ctx, time.Now())
}

// snapshotTaken tells from the running domain whether the live snapshot
// happened: every disk on its interim overlay (libvirt switches all or
// none), or already moved on from it onto the overlay at its own path.
func (s *snap) snapshotTaken() (bool, error) {
	lds, err := s.h.liveDisks(s.req.Domain)
	if err != nil {
		return false, err
	}
	on := 0
	for _, d := range s.rec.Disks {
		ld := lds[d.Target]
		switch {
		case ld.Source == d.Interim:
			on++
		case (d.Phase == dkCopying || d.Phase == dkSwitched) && ld.Source == d.Source && ld.Backing == d.Retained:
			on++ // pivoted before a crash
		}
	}
	if on != 0 && on != len(s.rec.Disks) {
		return false, fmt.Errorf("%w: only some disks of %s are on their interim overlays", ErrInconsistent, s.req.Domain)
	}
	return on > 0, nil
}

// switchDisks moves each disk of the running guest from its interim overlay
// onto the overlay at its own path (swapDisks made it), each move announced
// first; a re-run goes on from what libvirt says the disk reads.
func (s *snap) switchDisks(ctx context.Context) error {
	for i := range s.rec.Disks {
		d := &s.rec.Disks[i]
		if d.Phase == dkOverlay {
			d.Phase = dkCopying
			if err := s.save(s.rec.Phase); err != nil {
				return err
			}
		} else if d.Phase == dkCopying {
			// A copy announced by a run that did not see it through: a
			// libvirtd killed inside it may have left its target in QEMU.
			if err := s.h.dropStrayNodes(s.req.Domain, []string{d.Source}); err != nil {
				return wrap(ErrCreateOverlay, err, "%s", d.Source)
			}
		}
		if d.Phase == dkCopying {
			if err := s.copyOnto(ctx, *d); err != nil {
				return wrap(ErrCreateOverlay, err, "%s", d.Source)
			}
			d.Phase = dkSwitched
			if err := s.save(s.rec.Phase); err != nil {
				return err
			}
			if err := s.h.fail("switch"); err != nil {
				return wrap(ErrCreateOverlay, err, "%s", d.Source)
			}
		}
		interim, err := diskPath(d.Interim)
		if err != nil {
			return err
		}
		if err := s.h.seam.Remove(interim); err != nil {
			return wrap(ErrCreateOverlay, err, "%s", d.Interim)
		}
	}
	return nil
}

// copyOnto copies what the guest wrote to the interim overlay onto the
// overlay at the disk's path (only the top layer: both are backed by the
// same image) and pivots the guest onto it.
func (s *snap) copyOnto(ctx context.Context, d diskRecord) error {
	lds, err := s.h.liveDisks(s.req.Domain)
	if err != nil {
		return err
	}
	ld := lds[d.Target]
	switch {
	case ld.Source == d.Source && ld.Backing == d.Retained:
		return nil // pivoted before a crash
	case ld.Source != d.Interim:
		return fmt.Errorf("%w: %s reads %s, neither its interim overlay nor its own", ErrInconsistent, d.Target, ld.Source)
	case !ld.Mirror:
		dest := libvirtxml.DomainDisk{
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: d.Source}},
			Driver: &libvirtxml.DomainDiskDriver{Type: "qcow2"},
		}
		x, err := dest.Marshal()
		if err != nil {
			return err
		}
		err = s.h.op("copy "+d.Interim+" onto "+d.Source, func() error {
			return s.h.withDomain(s.req.Domain, func(_ *lv.Connect, dom *lv.Domain) error {
				return dom.BlockCopy(d.Target, x, &lv.DomainBlockCopyParameters{},
					lv.DOMAIN_BLOCK_COPY_SHALLOW|lv.DOMAIN_BLOCK_COPY_REUSE_EXT|lv.DOMAIN_BLOCK_COPY_TRANSIENT_JOB)
			})
		})
		if err != nil {
			return err
		}
	}
	return s.h.pivot(ctx, s.req.Domain, d.Target)
}

// pivotWait bounds how long a block job may take to be ready to pivot: it
// copies one interim overlay, the writes of a few seconds.
const pivotWait = 10 * time.Minute

// pivot waits until the disk's block job is ready and pivots the guest
// onto its destination.
func (h *Hypervisor) pivot(ctx context.Context, domain, target string) error {
	wait := h.waitOnJob(domain, target)
	for {
		lds, err := h.liveDisks(domain)
		if err != nil {
			return err
		}
		ld := lds[target]
		if !ld.Mirror {
			return fmt.Errorf("%s of %s: the block job ended before the pivot", target, domain)
		}
		if ld.Ready {
			break
		}
		if err := wait.stuck(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	return h.op("pivot "+target+" of "+domain, func() error {
		return h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
			return d.BlockJobAbort(target, lv.DOMAIN_BLOCK_JOB_ABORT_PIVOT)
		})
	})
}

// jobAsk is how long a block job libvirt shows may keep a pivot or its
// cancel waiting before QEMU is asked whether it still runs it: a libvirtd
// killed during a pivot can come back showing a job QEMU has finished.
const jobAsk = 30 * time.Second

// jobWait is one wait on the block job of a disk that libvirt shows: once
// it has waited jobAsk, QEMU is asked (once) whether it runs a job on that
// disk, and after pivotWait the wait ends anyway.
type jobWait struct {
	h              *Hypervisor
	domain, target string
	start          time.Time
	asked          bool
}

func (h *Hypervisor) waitOnJob(domain, target string) *jobWait {
	return &jobWait{h: h, domain: domain, target: target, start: time.Now()}
}

// stuck says why the wait must end, or nil to wait on.
func (w *jobWait) stuck() error {
	waited := time.Since(w.start)
	if waited > pivotWait {
		return fmt.Errorf("%s of %s: the block job does not end after %v", w.target, w.domain, pivotWait)
	}
	if waited < jobAsk || w.asked {
		return nil
	}
	w.asked = true
	runs, err := w.h.qemuRunsJob(w.domain, w.target)
	if err != nil || runs {
		return err
	}
	return fmt.Errorf("%w: libvirt shows a block job on %s of %s that QEMU no longer runs (libvirtd restarted during its pivot?); see docs/crashes.md",
		ErrInconsistent, w.target, w.domain)
}

// endBlockJob cancels the disk's block job, if any, and waits until libvirt
// no longer shows it: the guest stays on the job's source.
func (h *Hypervisor) endBlockJob(ctx context.Context, domain, target string) error {
	wait := h.waitOnJob(domain, target)
	for i := 0; ; i++ {
		lds, err := h.liveDisks(domain)
		if err != nil {
			return err
		}
		if !lds[target].Mirror {
			return nil
		}
		if err := wait.stuck(); err != nil {
			return err
		}
		if i == 0 {
			err := h.op("cancel the block job of "+target, func() error {
				return h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
					return d.BlockJobAbort(target, 0)
				})
			})
			if err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// liveRollback brings a running guest whose live snapshot cannot complete
// back onto its own disks without stopping it: a disk still on its interim
// overlay gets its image back at its path and the interim committed into
// it. A disk already switched runs on an overlay of its retained image,
// which the merge settles like any other (the retained image stays). nil:
// the guest runs on its own disks and nothing of the snapshot is left.
func (s *snap) liveRollback(ctx context.Context, cause error) error {
	ctx = context.WithoutCancel(ctx)
	failed := func(what string, err error) error {
		return fmt.Errorf("%w; rollback failed too: %s: %v", cause, what, err)
	}
	if s.rec.Phase != phRollingBack {
		s.rec.Failure, s.rec.Kind = cause.Error(), snapClasses.of(cause, nil)
		if err := s.save(phRollingBack); err != nil {
			return errors.Join(cause, err)
		}
	}
	var switched []string
	for i := len(s.rec.Disks) - 1; i >= 0; i-- {
		d := &s.rec.Disks[i]
		lds, err := s.h.liveDisks(s.req.Domain)
		if err != nil {
			return failed("read the disks", err)
		}
		ld := lds[d.Target]
		switch {
		case ld.Source == d.Source && ld.Backing == d.Retained:
			switched = append(switched, d.Target)
		case ld.Source == d.Interim:
			// A copy (or a commit begun before a crash) is cancelled: the
			// guest reads the interim overlay until the commit's pivot.
			if err := s.h.endBlockJob(ctx, s.req.Domain, d.Target); err != nil {
				return failed("cancel the copy of "+d.Target, err)
			}
			if err := s.undoDisk(d); err != nil {
				return failed("undo "+d.Target, err)
			}
			err := s.h.op("commit "+d.Interim+" into "+d.Source, func() error {
				return s.h.withDomain(s.req.Domain, func(_ *lv.Connect, dom *lv.Domain) error {
					return dom.BlockCommit(d.Target, "", "", 0, lv.DOMAIN_BLOCK_COMMIT_ACTIVE)
				})
			})
			if err == nil {
				err = s.h.pivot(ctx, s.req.Domain, d.Target)
			}
			if err != nil {
				return failed("commit "+d.Target, err)
			}
		}
		if interim, err := diskPath(d.Interim); err != nil {
			return failed("remove "+d.Interim, err)
		} else if err := s.h.seam.Remove(interim); err != nil {
			return failed("remove "+d.Interim, err)
		}
		if d.Phase != "" && d.Phase != dkSwitched {
			d.Phase = ""
			if err := s.save(s.rec.Phase); err != nil {
				return errors.Join(cause, err)
			}
		}
	}
	// A copy cut short by libvirtd's death may have left its target open
	// in QEMU (strays.go).
	var files []string
	for _, d := range s.rec.Disks {
		files = append(files, d.Source, d.Interim, d.Retained)
	}
	strayErr := s.h.dropStrayNodes(s.req.Domain, files)
	for _, p := range []hostio.Path{s.xmlPath, s.stateFile(), s.statePath} {
		if err := s.h.seam.Remove(p); err != nil {
			return failed("remove "+p.String(), err)
		}
	}
	if err := s.settled(); err != nil {
		return errors.Join(cause, err)
	}
	if strayErr != nil {
		// Not worth a rollback that never ends: the files are settled.
		return fmt.Errorf("%w (rolled back, but QEMU's block nodes could not be checked for strays: %v)", cause, strayErr)
	}
	if len(switched) > 0 {
		return fmt.Errorf("%w (rolled back but for %v, which run on overlays of their retained images until merged)", cause, switched)
	}
	return nil
}

// ownPause are the reasons a failed save or snapshot of ours leaves a
// guest paused for; a guest its owner paused, or one QEMU paused on an I/O
// error, stays paused.
var ownPause = []lv.DomainPausedReason{
	lv.DOMAIN_PAUSED_MIGRATION, lv.DOMAIN_PAUSED_SAVE, lv.DOMAIN_PAUSED_SNAPSHOT, lv.DOMAIN_PAUSED_UNKNOWN,
}

// unpause resumes a guest left paused by one of ownPause.
func (h *Hypervisor) unpause(domain string) error {
	return h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
		state, reason, err := d.GetState()
		if err != nil || state != lv.DOMAIN_PAUSED || !slices.Contains(ownPause, lv.DomainPausedReason(reason)) {
			return err
		}
		return h.op("resume the paused guest of "+domain, d.Resume)
	})
}
