package libvirt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	lv "libvirt.org/go/libvirt"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// RestoreDisk is one disk a restore puts back.
type RestoreDisk struct {
	Target string
	Live   hostio.Path // the image the domain uses, beneath its storage directory
	Backup hostio.Path // the backed-up image, beneath the retain root, on Live's filesystem
}

// RestoreRequest asks to put a VM back as a backup saw it.
type RestoreRequest struct {
	Domain string
	// Disks as the directory's disk entries say; the saved XML must name
	// exactly these (see checkSavedXML).
	Disks     []RestoreDisk
	StateFile hostio.Path // a save image, or the placeholder of a shut-off VM
	XMLFile   hostio.Path // the domain XML saved with the backup
	Ownership Ownership
	// ParkDir holds the current VM's saved state until the restored VM runs,
	// so that a failure can bring the current VM back exactly as it was. It
	// must be on a filesystem with room for the state; zero destroys instead.
	ParkDir hostio.Path
	// WithoutState defines and starts the VM from the XML instead of resuming
	// the saved state (sstRestoreVMWithoutState).
	WithoutState bool
	// ForceStart starts the VM from the XML when resuming the state fails
	// (sstVirtualizationVirtualMachineForceStart).
	ForceStart bool
	// Record is the restore's intent record: where a re-run goes on from.
	Record hostio.Record
}

// RestoreResult reports how the VM came back.
type RestoreResult struct {
	Running   bool
	FromState bool // resumed from the saved state (not booted from the XML)
	Duration  time.Duration
	Downtime  time.Duration // from stopping the current VM until the restored one runs
}

// preRestore is the suffix of a live image kept aside until the restore has
// worked. Only the record says whether one was moved.
const preRestore = ".pre-restore"

func (d RestoreDisk) parked() hostio.Path {
	return d.Live.Dir().MustJoin(d.Live.Base() + preRestore)
}

// parkedState is the current VM's state file in ParkDir.
func (r RestoreRequest) parkedState() (hostio.Path, error) {
	if r.ParkDir.IsZero() {
		return hostio.Path{}, nil
	}
	return r.ParkDir.Join(r.Domain + ".pre-restore.state")
}

// Restore puts a backup back, driven by its intent record (req.Record):
//
//	checked   the saved XML is validated against the directory's disks, the
//	          images are checked, and the previous VM is recorded (defined?
//	          running? its definitions; per disk whether a live image was
//	          there): nothing is touched before this is saved
//	stopping  the previous VM is saved to the park (or destroyed)
//	stopped   it is off; whether its RAM state is parked is recorded
//	moving    per disk: the live image renamed to <image>.pre-restore (if
//	          there was one), the backed-up image renamed over it, never
//	          replacing anything
//	defining  the saved XML becomes the definition
//	resuming  the saved state is resumed (or the VM started, or left off)
//	resumed   the point of no return: the restored VM is never stopped or
//	          resumed again
//	cleaned   the previous disks and parked state are removed
//
// Each phase is saved before the operations it announces, and a re-run goes
// on from the record and the domain's state, never from which files exist.
// A re-run after the point of no return only finishes the cleanup. A
// failure before it puts back exactly what the record says was moved, the
// previous definition and the parked state, which is removed only once the
// previous VM runs from it; if the put-back fails too, the record stays open
// and the error says where the previous disks and state are.
func (h *Hypervisor) Restore(ctx context.Context, req RestoreRequest) (res RestoreResult, err error) {
	took := h.timedOnDomain(req.Domain, func() { res, err = h.restoreVM(ctx, req) })
	res.Duration = took
	return res, err
}

// restoreRun is one run of a restore: the request and its record.
type restoreRun struct {
	h    *Hypervisor
	ctx  context.Context
	req  RestoreRequest
	rec  *RestoreRecord
	own  owner
	park hostio.Path
}

func (h *Hypervisor) restoreVM(ctx context.Context, req RestoreRequest) (RestoreResult, error) {
	if req.Record.Path.IsZero() {
		return RestoreResult{}, fmt.Errorf("%w: restore of %s without an intent record", ErrInconsistent, req.Domain)
	}
	own, err := resolveOwnership(req.Ownership)
	if err != nil {
		return RestoreResult{}, err
	}
	park, err := req.parkedState()
	if err != nil {
		return RestoreResult{}, wrap(ErrInconsistent, err, "park directory")
	}
	rec, found, err := LoadRestoreRecord(req.Record)
	if err != nil {
		return RestoreResult{}, wrap(ErrInconsistent, err, "restore of %s", req.Domain)
	}
	r := &restoreRun{h: h, ctx: ctx, req: req, rec: &rec, own: own, park: park}
	if !found {
		if rec, err = h.checkRestore(ctx, req, park); err != nil {
			return RestoreResult{}, err
		}
		if err := r.save(RestoreChecked); err != nil {
			return RestoreResult{}, err
		}
	} else if err := r.sameRequest(); err != nil {
		return RestoreResult{}, err
	}
	switch {
	case rec.Phase.Restored():
		return r.clean()
	case rec.Phase == RestorePutBack:
		return RestoreResult{}, fmt.Errorf("%w (the previous VM was put back)", rec.failure())
	case rec.Phase == RestorePuttingBack:
		return r.putBack(rec.failure())
	}
	return r.forward()
}

// sameRequest: a re-run works on the disks its record names.
func (r *restoreRun) sameRequest() error {
	ok := len(r.rec.Disks) == len(r.req.Disks)
	for i := 0; ok && i < len(r.req.Disks); i++ {
		d := r.req.Disks[i]
		ok = r.rec.Disks[i].Target == d.Target && r.rec.Disks[i].Live == d.Live.String() && r.rec.Disks[i].Backup == d.Backup.String()
	}
	if !ok {
		return fmt.Errorf("%w: the restore record %s names other disks than the request", ErrInconsistent, r.req.Record.Path)
	}
	return nil
}

func (r *restoreRun) save(p RestorePhase) error {
	r.rec.Phase = p
	if err := r.req.Record.Save(r.rec); err != nil {
		return wrap(ErrRestoreFailed, err, "restore of %s", r.req.Domain)
	}
	return nil
}

// checkRestore checks everything that can be checked and records the
// previous VM. It only reads.
func (h *Hypervisor) checkRestore(ctx context.Context, req RestoreRequest, park hostio.Path) (RestoreRecord, error) {
	var rec RestoreRecord
	prev, err := h.previousVM(ctx, req.Domain)
	if err != nil {
		return rec, err
	}
	xb, err := hostio.ReadFile(req.XMLFile)
	if err != nil {
		return rec, wrap(ErrMissingFile, err, "XML file")
	}
	x, err := format.StripBackingStore(string(xb))
	if err != nil {
		return rec, wrap(ErrMissingFile, err, "XML file %s", req.XMLFile)
	}
	var want []Disk
	seen := map[string]bool{}
	for _, d := range req.Disks {
		if seen[d.Target] || seen[d.Live.String()] {
			return rec, fmt.Errorf("%w: disk %s or %s named twice", ErrDiskMismatch, d.Target, d.Live)
		}
		seen[d.Target], seen[d.Live.String()] = true, true
		want = append(want, Disk{Target: d.Target, Source: d.Live.String()})
	}
	if err := checkSavedXML(x, req.Domain, want, prev.XML); err != nil {
		return rec, err
	}
	if !hostio.IsRegular(req.StateFile) {
		return rec, wrap(ErrMissingFile, nil, "state file %s", req.StateFile)
	}
	rec.WithState = format.IsSaveImageAt(req.StateFile)
	if !park.IsZero() && hostio.Exists(park) {
		return rec, fmt.Errorf("%w: a parked state of an earlier restore is at %s", ErrInconsistent, park)
	}
	own := map[string]bool{req.XMLFile.String(): true, req.StateFile.String(): true, park.String(): true}
	for _, d := range req.Disks {
		if own[d.Backup.String()] || own[d.parked().String()] {
			return rec, fmt.Errorf("%w: disk %s has the name of one of the backup's own files", ErrDiskMismatch, d.Backup)
		}
		if !hostio.IsRegular(d.Backup) {
			return rec, wrap(ErrMissingFile, nil, "backed-up image %s", d.Backup)
		}
		if err := hostio.CheckPath(d.Backup); err != nil {
			return rec, wrap(ErrMissingFile, err, "backed-up image")
		}
		if err := format.CheckImage(ctx, d.Backup.String(), ""); err != nil {
			return rec, err
		}
		im, err := format.ImageInfo(ctx, d.Backup.String())
		if err != nil {
			return rec, wrap(ErrCorruptImage, err, "%s", d.Backup)
		}
		if im.BackingFile != "" {
			return rec, fmt.Errorf("%w: %s still needs %s", ErrMissingFile, d.Backup, im.BackingFile)
		}
		a, err1 := device(d.Live.Dir().String())
		b, err2 := device(d.Backup.String())
		if err := errors.Join(err1, err2); err != nil {
			return rec, wrap(ErrMissingFile, err, "%s", d.Target)
		}
		if a != b {
			return rec, fmt.Errorf("%w: %s is not on the filesystem of %s", ErrRenameImage, d.Backup, d.Live)
		}
		if hostio.Exists(d.parked()) {
			return rec, fmt.Errorf("%w: an earlier restore left %s", ErrInconsistent, d.parked())
		}
		rec.Disks = append(rec.Disks, RestoreDiskRecord{Target: d.Target, Live: d.Live.String(),
			Backup: d.Backup.String(), HadLive: hostio.Exists(d.Live)})
	}
	rec.XML, rec.Previous = x, prev
	return rec, nil
}

// previousVM reads what a failed restore goes back to.
func (h *Hypervisor) previousVM(ctx context.Context, name string) (PreviousVM, error) {
	var prev PreviousVM
	defined, err := h.onDefined(ctx, name, func(d *lv.Domain) (err error) {
		prev = PreviousVM{Defined: true}
		if prev.XML, err = d.GetXMLDesc(lv.DOMAIN_XML_INACTIVE | lv.DOMAIN_XML_SECURE); err != nil {
			return err
		}
		if prev.Running, err = d.IsActive(); err != nil || !prev.Running {
			return err
		}
		live, err := d.GetXMLDesc(lv.DOMAIN_XML_SECURE | lv.DOMAIN_XML_MIGRATABLE)
		if err != nil {
			return err
		}
		prev.SaveXML, err = format.StripBackingStore(live)
		return err
	})
	if !defined {
		prev = PreviousVM{} // an attempt before a lost connection may have seen it
	}
	if err != nil {
		return prev, wrap(ErrRestoreFailed, err, "read %s", name)
	}
	return prev, nil
}

// active: the domain runs (or is paused); false when it is not defined.
func (h *Hypervisor) active(ctx context.Context, name string) (bool, error) {
	var on bool
	defined, err := h.onDefined(ctx, name, func(d *lv.Domain) (err error) {
		on, err = d.IsActive()
		return err
	})
	return defined && on, err
}

// onDefined runs f on the domain, retrying while libvirtd restarts. A
// domain that is not defined is no error: it returns false without calling
// f, and each caller says what a missing domain means to it.
func (h *Hypervisor) onDefined(ctx context.Context, name string, f func(d *lv.Domain) error) (defined bool, err error) {
	err = h.doRetry(ctx, func(c *lv.Connect) error {
		defined = false
		d, err := c.LookupDomainByName(name)
		if errors.Is(err, lv.ERR_NO_DOMAIN) {
			return nil
		}
		if err != nil {
			return err
		}
		defer d.Free()
		defined = true
		return f(d)
	})
	return defined, err
}

// onDomain runs f on the domain as one operation of the seam.
func (h *Hypervisor) onDomain(opName, name string, f func(d *lv.Domain) error) error {
	return h.op(opName+" "+name, func() error {
		return h.do(func(c *lv.Connect) error {
			d, err := c.LookupDomainByName(name)
			if err != nil {
				return err
			}
			defer d.Free()
			return f(d)
		})
	})
}

// move renames from to to, never replacing anything. The rename is atomic:
// an announced move whose source is gone and whose target is there has
// happened (a crash came between it and the next record).
func (h *Hypervisor) move(from, to hostio.Path) error {
	err := h.seam.RenameNoReplace(from, to)
	if err != nil && errors.Is(err, fs.ErrNotExist) && !hostio.Exists(from) && hostio.Exists(to) {
		return nil
	}
	return err
}

func (r *restoreRun) forward() (RestoreResult, error) {
	if r.rec.Phase.before(RestoreStopped) {
		if err := r.stopPrevious(); err != nil {
			return r.putBack(err)
		}
	}
	if r.rec.Phase.before(RestoreDefining) {
		if err := r.moveDisks(); err != nil {
			return r.putBack(err)
		}
	}
	if r.rec.Phase.before(RestoreResuming) {
		if err := r.save(RestoreDefining); err != nil {
			return r.putBack(err)
		}
		if err := r.h.op("define "+r.req.Domain, func() error { return r.h.define(r.rec.XML) }); err != nil {
			return r.putBack(wrap(ErrRestoreFailed, err, "define %s", r.req.Domain))
		}
	}
	if r.rec.Phase.before(RestoreResumed) {
		if err := r.resume(); err != nil {
			return r.putBack(err)
		}
	}
	return r.clean()
}

// stopPrevious saves the previous VM's state to the park (so a failure can
// resume it), or destroys it when there is no park.
func (r *restoreRun) stopPrevious() error {
	name := r.req.Domain
	on, err := r.h.active(r.ctx, name)
	if err != nil {
		return wrap(ErrRestoreFailed, err, "stop %s", name)
	}
	if !r.rec.Previous.Running {
		if on {
			return fmt.Errorf("%w: %s was started while it was being restored", ErrInconsistent, name)
		}
		r.rec.Stopped = time.Now()
		return r.save(RestoreStopped)
	}
	if err := r.save(RestoreStopping); err != nil {
		return err
	}
	if on {
		if !r.park.IsZero() {
			if err := hostio.CheckPath(r.park); err != nil {
				return wrap(ErrRestoreFailed, err, "park")
			}
			err = r.h.onDomain("save to "+r.park.String()+":", name, func(d *lv.Domain) error {
				return d.SaveFlags(r.park.String(), r.rec.Previous.SaveXML, 0)
			})
		} else {
			err = r.h.onDomain("destroy", name, func(d *lv.Domain) error { return d.Destroy() })
		}
		if err != nil {
			return wrap(ErrRestoreFailed, err, "stop %s", name)
		}
	}
	// Libvirt stops a domain it saves only once the save image is complete.
	r.rec.Parked = !r.park.IsZero() && format.IsSaveImageAt(r.park)
	if r.rec.Parked {
		r.rec.ParkedAt = r.park.String()
	}
	r.rec.Stopped = time.Now()
	return r.save(RestoreStopped)
}

// moveDisks parks each live image and puts the backed-up one in its place.
func (r *restoreRun) moveDisks() error {
	for i := range r.rec.Disks {
		d, rd := &r.rec.Disks[i], r.req.Disks[i]
		if d.Step == restorePlaced {
			continue
		}
		if d.Step == restoreUntouched && d.HadLive {
			d.Step = restoreParking
			if err := r.save(RestoreMoving); err != nil {
				return err
			}
		}
		if d.Step == restoreParking {
			if err := r.h.move(rd.Live, rd.parked()); err != nil {
				return wrap(ErrRenameImage, err, "%s", rd.Live)
			}
		}
		if d.Step != restorePlacing {
			d.Step = restorePlacing
			if err := r.save(RestoreMoving); err != nil {
				return err
			}
		}
		if err := r.h.move(rd.Backup, rd.Live); err != nil {
			return wrap(ErrRenameImage, err, "%s", rd.Backup)
		}
		if err := r.own.applyAt(r.h.seam, rd.Live); err != nil {
			return err
		}
		if err := r.syncDirs(rd); err != nil {
			return err
		}
		d.Step = restorePlaced
		if err := r.save(RestoreMoving); err != nil {
			return err
		}
	}
	return nil
}

func (r *restoreRun) syncDirs(d RestoreDisk) error {
	if err := r.h.seam.SyncDir(d.Live.Dir()); err != nil {
		return wrap(ErrRenameImage, err, "%s", d.Live.Dir())
	}
	if err := r.h.seam.SyncDir(d.Backup.Dir()); err != nil {
		return wrap(ErrRenameImage, err, "%s", d.Backup.Dir())
	}
	return nil
}

// resume brings the restored VM to the backup's power state; the record
// then passes the point of no return.
func (r *restoreRun) resume() error {
	name := r.req.Domain
	if err := r.h.fail("restore-start"); err != nil {
		return wrap(ErrRestoreFailed, err, "%s", name)
	}
	if err := r.save(RestoreResuming); err != nil {
		return err
	}
	on, err := r.h.active(r.ctx, name)
	if err != nil {
		return wrap(ErrRestoreFailed, err, "%s", name)
	}
	fromState := r.rec.WithState && !r.req.WithoutState
	switch {
	case on:
		// Resumed before a crash: the previous VM was stopped, this is the restored one.
		r.rec.Running, r.rec.FromState = true, fromState
	case fromState:
		if err := hostio.CheckPath(r.req.StateFile); err != nil {
			return wrap(ErrRestoreFailed, err, "state file")
		}
		err := r.h.op("resume "+name+" from "+r.req.StateFile.String(), func() error {
			return r.h.restore(r.ctx, name, r.req.StateFile.String(), r.rec.XML)
		})
		if err == nil {
			r.rec.Running, r.rec.FromState = true, true
			break
		}
		if !r.req.ForceStart {
			return wrap(ErrRestoreFailed, err, "%s", name)
		}
		if serr := r.h.op("start "+name, func() error { return r.h.start(name) }); serr != nil {
			return wrap(ErrRestoreFailed, errors.Join(err, serr), "%s", name)
		}
		r.rec.Running = true
	case r.req.WithoutState:
		if err := r.h.op("start "+name, func() error { return r.h.start(name) }); err != nil {
			return wrap(ErrRestoreFailed, err, "start %s", name)
		}
		r.rec.Running = true
	}
	if r.rec.Running {
		r.rec.Downtime = time.Since(r.rec.Stopped)
	}
	return r.save(RestoreResumed)
}

// clean removes the previous disks and the parked state once the restore
// took effect; a re-run after the point of no return only does this.
func (r *restoreRun) clean() (RestoreResult, error) {
	if r.rec.Phase == RestoreResumed {
		for i, d := range r.rec.Disks {
			if !d.HadLive {
				continue
			}
			p := r.req.Disks[i].parked()
			if err := r.h.seam.Remove(p); err != nil {
				return r.rec.Result(), wrap(ErrRenameImage, err, "the VM runs restored, but the previous image %s stays", p)
			}
		}
		if r.rec.Parked {
			if err := r.h.seam.Remove(r.park); err != nil {
				return r.rec.Result(), wrap(ErrRenameImage, err, "the VM runs restored, but the parked state %s stays", r.park)
			}
		}
		if err := r.save(RestoreCleaned); err != nil {
			return r.rec.Result(), err
		}
	}
	return r.rec.Result(), nil
}

// putBack undoes a restore that failed before the point of no return,
// exactly as far as the record says it went.
func (r *restoreRun) putBack(cause error) (RestoreResult, error) {
	var res RestoreResult
	if r.rec.Phase != RestorePuttingBack {
		r.rec.Failure, r.rec.FailureClass, r.rec.FailedAt = cause.Error(), restoreClasses.of(cause, ErrRestoreFailed), r.rec.Phase
		r.rec.PutBack = putBackStopRestored
		if err := r.save(RestorePuttingBack); err != nil {
			// Undoing without a record would leave a re-run a record that lies.
			return res, fmt.Errorf("%w; nothing was put back: %v; %s", cause, err, r.where())
		}
	}
	if err := r.undo(); err != nil {
		r.rec.PutBackError = err.Error()
		_ = r.save(RestorePuttingBack)
		return res, fmt.Errorf("%w; putting the previous VM back failed too: %v; %s", cause, err, r.where())
	}
	if err := r.save(RestorePutBack); err != nil {
		return res, fmt.Errorf("%w; the previous VM was put back, but its record was not closed: %v", cause, err)
	}
	return res, fmt.Errorf("%w (the previous VM was put back)", cause)
}

// where says where the previous VM's parts are while a put-back is open.
func (r *restoreRun) where() string {
	var parts []string
	for i, d := range r.rec.Disks {
		if d.Step != restoreUntouched && d.HadLive {
			parts = append(parts, "its disk "+d.Target+" may be at "+r.req.Disks[i].parked().String())
		}
	}
	if r.rec.Parked {
		parts = append(parts, "its memory state is parked at "+r.park.String())
	}
	parts = append(parts, "the restore's intent record is "+r.req.Record.Path.String())
	return "of the previous VM, " + strings.Join(parts, "; ")
}

func (r *restoreRun) undo() error {
	name, rec := r.req.Domain, r.rec
	next := func(s putBackStage) error {
		rec.PutBack = s
		return r.save(RestorePuttingBack)
	}
	if rec.PutBack <= putBackStopRestored {
		if !rec.FailedAt.before(RestoreResuming) {
			on, err := r.h.active(r.ctx, name)
			if err != nil {
				return err
			}
			if on { // the restored VM, which may have started
				if err := r.h.onDomain("destroy", name, func(d *lv.Domain) error { return d.Destroy() }); err != nil {
					return err
				}
			}
		}
		if err := next(putBackDisks); err != nil {
			return err
		}
	}
	if rec.PutBack <= putBackDisks {
		for i := len(rec.Disks) - 1; i >= 0; i-- {
			d, rd := &rec.Disks[i], r.req.Disks[i]
			if d.Step == restorePlacing || d.Step == restorePlaced {
				if err := r.h.move(rd.Live, rd.Backup); err != nil {
					return wrap(ErrRenameImage, err, "%s back to %s", rd.Live, rd.Backup)
				}
				d.Step = restoreUntouched
				if d.HadLive {
					d.Step = restoreParking
				}
				if err := r.save(RestorePuttingBack); err != nil {
					return err
				}
			}
			if d.Step == restoreParking {
				if err := r.h.move(rd.parked(), rd.Live); err != nil {
					return wrap(ErrRenameImage, err, "%s back to %s", rd.parked(), rd.Live)
				}
				d.Step = restoreUntouched
				if err := r.save(RestorePuttingBack); err != nil {
					return err
				}
			}
			if err := r.syncDirs(rd); err != nil {
				return err
			}
		}
		if err := next(putBackDefine); err != nil {
			return err
		}
	}
	if rec.PutBack <= putBackDefine {
		if !rec.FailedAt.before(RestoreDefining) {
			var err error
			if rec.Previous.Defined {
				err = r.h.op("define "+name, func() error { return r.h.define(rec.Previous.XML) })
			} else {
				err = r.h.onDomain("undefine", name, func(d *lv.Domain) error { return d.Undefine() })
				if errors.Is(err, lv.ERR_NO_DOMAIN) {
					err = nil
				}
			}
			if err != nil {
				return err
			}
		}
		if err := next(putBackResuming); err != nil {
			return err
		}
	}
	if rec.PutBack <= putBackResuming {
		if rec.Previous.Running {
			on, err := r.h.active(r.ctx, name)
			if err != nil {
				return err
			}
			switch {
			case on: // it never stopped, or it was resumed before a crash
			case rec.Parked:
				if err := r.h.op("resume "+name+" from "+r.park.String(), func() error {
					return r.h.restore(r.ctx, name, r.park.String(), rec.Previous.SaveXML)
				}); err != nil {
					return err
				}
			default:
				if err := r.h.op("start "+name, func() error { return r.h.start(name) }); err != nil {
					return err
				}
			}
		}
		if err := next(putBackResumed); err != nil {
			return err
		}
	}
	// Only now, with the previous VM running from it, may the parked state go.
	if rec.Parked {
		if err := r.h.seam.Remove(r.park); err != nil {
			return err
		}
	}
	return nil
}

func (h *Hypervisor) define(xml string) error {
	return h.do(func(c *lv.Connect) error {
		d, err := c.DomainDefineXML(xml)
		if err == nil {
			d.Free()
		}
		return err
	})
}

func (h *Hypervisor) start(name string) error {
	return h.do(func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(name)
		if err != nil {
			return err
		}
		defer d.Free()
		if active, _ := d.IsActive(); active {
			return nil
		}
		return d.Create()
	})
}
