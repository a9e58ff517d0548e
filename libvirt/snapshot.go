package libvirt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lv "libvirt.org/go/libvirt"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// Ownership is applied to each new overlay; empty names and a zero Perm
// leave that part as created.
type Ownership struct {
	Owner, Group string
	Perm         os.FileMode
}

// SnapshotRequest asks for the Snapshot of one domain.
type SnapshotRequest struct {
	Domain string
	// Disks as recorded in the directory: they must equal the domain's
	// file-backed disks (same targets and sources), else ErrDiskMismatch.
	// Each image is handled beneath its own directory (its storage
	// directory): a link below it is never followed.
	Disks []Disk
	// RAMDisk holds the state file while the VM is down, when it has room;
	// else the state goes straight to RetainDir. Zero: always RetainDir.
	RAMDisk hostio.Path
	// RetainDir is this backup's retain directory, beneath the retain root.
	// It must exist, on the filesystem of the images (they are renamed
	// into it).
	RetainDir          hostio.Path
	StateName, XMLName string // file names inside RetainDir
	Ownership          Ownership
	// Record is the step's intent record: Snapshot writes it before each
	// operation it announces and decides a re-run from it and the domain's
	// state alone. It is removed once the step is settled.
	Record hostio.Record
	// Live writes a running VM's memory while it runs and switches its
	// disks without stopping it (see liveswitch.go): the files are as
	// without. Bound limits how long the copy may run before the guest is
	// paused to finish it.
	Live  bool
	Bound PauseBound
	// SettleOnly finishes what the record started and starts nothing new:
	// a snapshot that never saved the VM is dropped, one of a shut-off VM
	// is undone, one whose VM is saved is brought to its end (the VM runs
	// on its overlays). Without a record it does nothing.
	SettleOnly bool
}

// RetainedDisk is a disk after Snapshot: Source is the new overlay, Retained
// the image as it was at the snapshot, now its backing file.
type RetainedDisk struct {
	Target, Source, Retained string
}

// SnapshotResult reports what Snapshot did and how long each part took.
type SnapshotResult struct {
	WasRunning bool
	StateFile  string // in RetainDir: a save image, or a placeholder if the VM was shut off
	XMLFile    string
	Disks      []RetainedDisk
	Live       bool          // the memory was written while the guest ran
	Bounded    bool          // ... until the bound paused the guest to finish
	Save       time.Duration // the save call
	Restore    time.Duration // the restore call
	// Downtime is how long the guest was paused, from libvirt's lifecycle
	// events; without them, from the save call until the domain runs again.
	Downtime time.Duration
	Total    time.Duration
}

// Modes of the files Snapshot writes: the state file is the guest's RAM.
const (
	stateMode = 0o600
	xmlMode   = 0o600 // when no permission is configured
)

// Phases of a snapshot, in order; the record names the last one announced.
const (
	phPlanned     = "planned"      // disks, state location and save XML decided
	phSaving      = "saving"       // the save call may have run
	phSaved       = "saved"        // the VM is down, its memory in the state file
	phStateWrite  = "placeholder"  // shut-off VM: the placeholder state may be written
	phXML         = "xml written"  // every disk swapped, the XML in RetainDir
	phRestoring   = "restoring"    // the restore call may have run
	phRestored    = "restored"     // the VM runs on its overlays
	phStateMoved  = "state moved"  // the state file is in RetainDir
	phRollingBack = "rolling back" // undoing: stop, disks back, XML gone
	phRBRestoring = "rollback restoring"
)

var snapPhaseOrder = map[string]int{
	phPlanned: 1, phSaving: 2, phSaved: 3, phStateWrite: 3, phXML: 4,
	phRestoring: 5, phRestored: 6, phStateMoved: 7,
}

// Disk phases: the rename and the overlay are each announced first.
const (
	dkMoving     = "moving"
	dkMoved      = "moved"
	dkOverlaying = "overlaying"
	dkOverlay    = "overlay"
)

// snapRecord is the intent record of one Snapshot (see hostio.Record).
type snapRecord struct {
	Phase      string
	WasRunning bool
	StateOnRAM bool   // the save went to the RAM disk
	SaveXML    string // computed before the save; the only XML a restore uses
	Disks      []diskRecord
	Failure    string `json:",omitempty"` // why a rollback started
	Kind       string `json:",omitempty"` // its sentinel
	StopFirst  bool   `json:",omitempty"` // the rollback stops a VM restored on the overlays
	Live       bool   `json:",omitempty"` // the guest runs on: the disks are switched live
	Bounded    bool   `json:",omitempty"` // ... until the bound paused it
}

type diskRecord struct {
	Target, Source, Retained string
	Format                   string
	Phase                    string `json:",omitempty"`
	// Interim is the overlay a live snapshot puts beside the disk first.
	Interim string `json:",omitempty"`
}

func (r *snapRecord) at(phase string) bool { return snapPhaseOrder[r.Phase] >= snapPhaseOrder[phase] }

// Snapshot saves a running VM's state, moves its disk images into RetainDir,
// puts an empty overlay backed by each retained image in its place and
// brings the VM back from the saved state (see the package doc). A shut-off
// VM stays shut off and gets a placeholder state file.
//
// Everything that can be checked is checked before the VM is touched. Once
// the VM is down, any failure is rolled back so that the VM runs again on
// its own disks, and the error is returned. Run again after a crash,
// Snapshot continues from its intent record.
func (h *Hypervisor) Snapshot(ctx context.Context, req SnapshotRequest) (res SnapshotResult, err error) {
	took := h.timedOnDomain(req.Domain, func() { res, err = h.snapshot(ctx, req) })
	res.Total = took
	return res, err
}

// snap is one Snapshot in progress: the request, its record and where the
// files go.
type snap struct {
	h                  *Hypervisor
	req                SnapshotRequest
	rec                snapRecord
	own                owner
	statePath, xmlPath hostio.Path
	ramState           hostio.Path // zero without a RAM disk
	res                SnapshotResult
	watch              *pauseWatch // the guest's pause, from the save on
	liveBudget         uint64      // bytes a live save may write before its last pass
}

func (r SnapshotRequest) check() error {
	if r.Domain == "" || r.RetainDir.IsZero() || r.Record.Path.IsZero() {
		return fmt.Errorf("%w: snapshot needs a domain, a retain directory and an intent record", ErrMissingFile)
	}
	for _, n := range []string{r.StateName, r.XMLName} {
		if !isFileName(n) {
			return fmt.Errorf("%w: %q is not a file name", ErrMissingFile, n)
		}
	}
	// Settling needs no retain directory: a record that announced nothing
	// done yet is dropped even after the node removed an empty one.
	if fi, err := hostio.Lstat(r.RetainDir); !r.SettleOnly && (err != nil || !fi.IsDir()) {
		return wrap(ErrMissingFile, err, "retain directory %s", r.RetainDir)
	}
	if !r.RAMDisk.IsZero() {
		if fi, err := hostio.Lstat(r.RAMDisk); err != nil || !fi.IsDir() {
			return wrap(ErrInvalidRAMDisk, err, "%s", r.RAMDisk)
		}
	}
	return nil
}

func isFileName(n string) bool {
	return n != "" && n == filepath.Base(n) && n != "." && n != ".." && n != "/"
}

// diskPath is a disk image held beneath its own directory.
func diskPath(source string) (hostio.Path, error) {
	p, err := hostio.Beneath(filepath.Dir(source), source)
	if err != nil || p.Rel == "." || !isFileName(p.Rel) {
		return hostio.Path{}, fmt.Errorf("%w: %q is not a disk image path", ErrDiskMismatch, source)
	}
	return p, nil
}

func (s *snap) retainedPath(d diskRecord) hostio.Path {
	return s.req.RetainDir.MustJoin(filepath.Base(d.Retained))
}

func (s *snap) stateFile() hostio.Path {
	if s.rec.StateOnRAM && !s.ramState.IsZero() {
		return s.ramState
	}
	return s.statePath
}

// save announces the next phase: the record is durable before the
// operation it names runs.
func (s *snap) save(phase string) error {
	s.rec.Phase = phase
	if err := s.req.Record.Save(s.rec); err != nil {
		return wrap(ErrInconsistent, err, "%s", s.req.Domain)
	}
	return nil
}

// abandon ends a step whose record could not announce its first change:
// nothing was done, so the planned record goes too (tidy drops it if this
// fails as well).
func (s *snap) abandon(err error) error {
	if rerr := s.settled(); rerr != nil {
		return fmt.Errorf("%w (and %v)", err, rerr)
	}
	return err
}

// settled ends the step: the record goes.
func (s *snap) settled() error {
	if err := s.req.Record.Remove(); err != nil {
		return wrap(ErrInconsistent, err, "%s", s.req.Domain)
	}
	return nil
}

func (h *Hypervisor) snapshot(ctx context.Context, req SnapshotRequest) (SnapshotResult, error) {
	s := &snap{h: h, req: req}
	if err := req.check(); err != nil {
		return s.res, err
	}
	own, err := resolveOwnership(req.Ownership)
	if err != nil {
		return s.res, err
	}
	s.own = own
	s.statePath = req.RetainDir.MustJoin(req.StateName)
	s.xmlPath = req.RetainDir.MustJoin(req.XMLName)
	if !req.RAMDisk.IsZero() {
		s.ramState = req.RAMDisk.MustJoin(req.StateName)
	}
	s.res.StateFile, s.res.XMLFile = s.statePath.String(), s.xmlPath.String()

	found, err := req.Record.Load(&s.rec)
	if err != nil {
		return s.res, wrap(ErrInconsistent, err, "%s", req.Domain)
	}
	if !found {
		if req.SettleOnly {
			return s.res, nil
		}
		return s.fresh(ctx)
	}
	for _, d := range s.rec.Disks {
		s.res.Disks = append(s.res.Disks, RetainedDisk{Target: d.Target, Source: d.Source, Retained: d.Retained})
	}
	s.res.WasRunning, s.res.Live, s.res.Bounded = s.rec.WasRunning, s.rec.Live, s.rec.Bounded
	return s.resume(ctx)
}

// domainState is what a re-run needs of the domain: active or not, and
// whether it is shut off by a save (its memory is in a save image).
type domainState struct {
	active, savedOff bool
}

func (h *Hypervisor) domainState(ctx context.Context, name string) (domainState, error) {
	var st domainState
	err := h.doRetry(ctx, func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(name)
		if errors.Is(err, lv.ERR_NO_DOMAIN) {
			// A transient domain is gone once saved.
			st = domainState{savedOff: true}
			return nil
		}
		if err != nil {
			return err
		}
		defer d.Free()
		state, reason, err := d.GetState()
		if err != nil {
			return err
		}
		st.active = state != lv.DOMAIN_SHUTOFF && state != lv.DOMAIN_CRASHED
		st.savedOff = state == lv.DOMAIN_SHUTOFF && lv.DomainShutoffReason(reason) == lv.DOMAIN_SHUTOFF_SAVED
		return nil
	})
	return st, err
}

// waitNoJob waits while libvirt still runs a job on the domain (a save or
// restore the daemon started before it was killed).
func (h *Hypervisor) waitNoJob(ctx context.Context, name string) error {
	for {
		busy := false
		err := h.withDomain(name, func(_ *lv.Connect, d *lv.Domain) error {
			if active, err := d.IsActive(); err != nil || !active {
				return err
			}
			ji, err := d.GetJobInfo()
			if errors.Is(err, lv.ERR_OPERATION_INVALID) {
				return nil // shut off meanwhile
			}
			if err != nil {
				return err
			}
			busy = ji.Type != lv.DOMAIN_JOB_NONE
			return nil
		})
		if errors.Is(err, ErrDomainNotFound) || (err == nil && !busy) {
			return nil
		}
		if err != nil && !IsTransient(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// fresh starts a snapshot no record speaks of. Files are looked at only to
// refuse what cannot be explained, and to recognise a snapshot already
// settled (each live disk an overlay of its retained image): a state file
// found here is never resumed.
func (s *snap) fresh(ctx context.Context) (SnapshotResult, error) {
	req := s.req
	info, desc, err := s.h.describe(req.Domain, lv.DOMAIN_XML_MIGRATABLE)
	if err != nil {
		return s.res, err
	}
	if len(desc.Other) > 0 {
		return s.res, fmt.Errorf("%w: disks %v are not image files", ErrDiskMismatch, desc.Other)
	}
	if err := sameDisks(req.Disks, desc.Disks); err != nil {
		return s.res, err
	}
	disks, done, err := s.planDisks(ctx, desc.Disks)
	if err != nil {
		return s.res, err
	}
	for _, d := range disks {
		s.res.Disks = append(s.res.Disks, RetainedDisk{Target: d.Target, Source: d.Source, Retained: d.Retained})
	}
	if done {
		// Settled by an earlier run (its record is gone): nothing to do.
		if info.Running {
			if err := s.h.verifyOverlays(req.Domain, s.res.Disks); err != nil {
				return s.res, fmt.Errorf("%w: %w", ErrInconsistent, err)
			}
		}
		s.res.WasRunning = format.IsSaveImageAt(s.statePath)
		return s.res, nil
	}
	// A state file no record names is not ours to resume.
	for _, p := range []hostio.Path{s.ramState, s.statePath} {
		if !p.IsZero() {
			if err := s.h.seam.Remove(p); err != nil {
				return s.res, wrap(ErrStateFile, err, "remove a stale state file")
			}
		}
	}
	saveXML, err := format.StripBackingStore(info.XML)
	if err != nil {
		return s.res, err
	}
	s.rec = snapRecord{WasRunning: info.Running, SaveXML: saveXML, Disks: disks}
	if !info.Running {
		return s.shutOff(ctx)
	}
	if err := s.room(desc); err != nil {
		return s.res, err
	}
	if err := ctx.Err(); err != nil {
		return s.res, err
	}
	s.res.WasRunning = true
	if err := s.save(phPlanned); err != nil {
		return s.res, err
	}
	return s.running(ctx)
}

// planDisks checks every disk before anything is touched: each image is a
// regular file, the retain directory is on its filesystem, nothing of ours
// sits at its retained name. done: every disk is already an overlay of its
// retained image.
func (s *snap) planDisks(ctx context.Context, disks []Disk) ([]diskRecord, bool, error) {
	retainDev, err := device(s.req.RetainDir.String())
	if err != nil {
		return nil, false, wrap(ErrMissingFile, err, "retain directory")
	}
	// No two files of the backup at one path: a disk named like the
	// state or XML file would be overwritten by it.
	seen := map[string]string{}
	for _, n := range []string{s.req.StateName, s.req.XMLName} {
		seen[n], seen[n+".tmp"] = "the backup's own "+n, "the backup's own "+n
	}
	var out []diskRecord
	overlays := 0
	for _, d := range disks {
		src, err := diskPath(d.Source)
		if err != nil {
			return nil, false, err
		}
		base := src.Base()
		if other, ok := seen[base]; ok {
			return nil, false, fmt.Errorf("%w: %s and %s would both be retained as %s", ErrRenameImage, other, d.Target, base)
		}
		seen[base] = d.Target
		ret := s.req.RetainDir.MustJoin(base)
		r := diskRecord{Target: d.Target, Source: d.Source, Retained: ret.String()}
		if dev, err := device(src.Root); err != nil {
			return nil, false, wrap(ErrMissingFile, err, "image directory of %s", d.Target)
		} else if dev != retainDev {
			return nil, false, fmt.Errorf("%w: %s is not on the filesystem of %s", ErrRenameImage, s.req.RetainDir, d.Source)
		}
		fi, err := hostio.Lstat(src)
		if err != nil {
			return nil, false, wrap(ErrMissingFile, err, "image of %s", d.Target)
		}
		if !fi.Mode().IsRegular() {
			return nil, false, fmt.Errorf("%w: %s is not a regular file", ErrDiskMismatch, d.Source)
		}
		if err := hostio.CheckPath(src); err != nil {
			return nil, false, wrap(ErrDiskMismatch, err, "%s", d.Source)
		}
		im, err := format.ImageInfo(ctx, d.Source)
		if err != nil {
			return nil, false, wrap(ErrCorruptImage, err, "%s", d.Source)
		}
		switch {
		case hostio.Exists(ret) && im.BackingFile == ret.String():
			overlays++
		case hostio.Exists(ret):
			return nil, false, fmt.Errorf("%w: %s already exists and %s is not its overlay", ErrRenameImage, ret, d.Source)
		case im.BackingFile != "" && filepath.Dir(im.BackingFile) == s.req.RetainDir.String():
			return nil, false, fmt.Errorf("%w: %s is an overlay of %s, which is gone", ErrMissingFile, d.Source, im.BackingFile)
		}
		r.Format = im.Format
		out = append(out, r)
	}
	if overlays != 0 && overlays != len(out) {
		return nil, false, fmt.Errorf("%w: only some disks of %s are snapshotted and no record says how", ErrInconsistent, s.req.Domain)
	}
	return out, len(out) > 0 && overlays == len(out), nil
}

// estimateState is the size a save image of the domain needs: its RAM and
// video RAM, plus room for device state and the embedded XML.
func (h *Hypervisor) estimateState(d format.Domain) uint64 {
	if h.stateSize != nil {
		return h.stateSize(d)
	}
	return (d.MemoryKiB+d.VideoKiB)*1024 + 16<<20
}

// overlayRoom is what one new overlay may take.
const overlayRoom = 1 << 20

// room checks the state file fits and decides where it goes.
func (s *snap) room(desc format.Domain) error {
	need := s.h.estimateState(desc)
	free, err := freeBytes(s.req.RetainDir.String())
	if err != nil {
		return wrap(ErrNoSpace, err, "retain directory")
	}
	// The state ends in RetainDir whichever way it goes.
	free -= min(free, uint64(len(s.rec.Disks))*overlayRoom)
	if free < need {
		return fmt.Errorf("%w: %s has %d MiB free, the state file needs about %d MiB",
			ErrNoSpace, s.req.RetainDir, free>>20, need>>20)
	}
	if !s.ramState.IsZero() {
		if f, err := freeBytes(s.req.RAMDisk.String()); err == nil && f >= need {
			s.rec.StateOnRAM = true
			free = min(free, f)
		}
	}
	// A live save's passes may write more than the memory: what is left
	// after one whole copy is theirs.
	s.liveBudget = free - need
	return nil
}

// resume continues a snapshot from its record and the domain's state.
func (s *snap) resume(ctx context.Context) (SnapshotResult, error) {
	rec := &s.rec
	if !rec.WasRunning {
		return s.resumeShutOff(ctx)
	}
	if rec.Phase == phRollingBack || rec.Phase == phRBRestoring {
		if err := s.rollback(ctx, s.recorded()); err != nil {
			return s.res, err
		}
		return s.res, s.rolledBack()
	}
	if rec.Live {
		return s.resumeLive(ctx)
	}
	if err := s.h.waitNoJob(ctx, s.req.Domain); err != nil {
		return s.res, err
	}
	st, err := s.h.domainState(ctx, s.req.Domain)
	if err != nil {
		return s.res, err
	}
	switch {
	case !rec.at(phSaving) || (rec.Phase == phSaving && st.active):
		// The save never ran, or failed: the VM runs on its own disks.
		if err := s.h.seam.Remove(s.stateFile()); err != nil {
			return s.res, wrap(ErrStateFile, err, "remove a partial state file")
		}
		if s.req.SettleOnly || !st.active {
			return s.restart(ctx)
		}
		return s.running(ctx)
	case rec.Phase == phSaving && !format.IsSaveImageAt(s.stateFile()):
		// Running when the save began, shut off now, no memory to resume:
		// the save was cut short (libvirtd died with it). Boot it.
		berr := s.backAfterSave(ctx)
		if !errors.Is(berr, ErrSaveFailed) {
			return s.res, berr
		}
		if err := s.h.seam.Remove(s.stateFile()); err != nil {
			return s.res, wrap(ErrStateFile, err, "remove a partial state file")
		}
		if err := s.settled(); err != nil {
			return s.res, err
		}
		return s.res, berr
	case rec.Phase == phSaving:
		if err := s.save(phSaved); err != nil {
			return s.res, err
		}
	case !rec.at(phRestoring) && st.active:
		return s.res, fmt.Errorf("%w: %s runs although its record says it is saved (%s)", ErrInconsistent, s.req.Domain, rec.Phase)
	case rec.Phase == phRestoring && !st.active && !st.savedOff:
		// Restored, then shut down by its owner: never resumed again.
		if err := s.save(phRestored); err != nil {
			return s.res, err
		}
	}
	return s.afterSave(ctx, time.Now())
}

// restart drops a record under which nothing happened to the VM and, unless
// only settling, starts afresh.
func (s *snap) restart(ctx context.Context) (SnapshotResult, error) {
	if err := s.settled(); err != nil {
		return s.res, err
	}
	s.res = SnapshotResult{StateFile: s.res.StateFile, XMLFile: s.res.XMLFile}
	if s.req.SettleOnly {
		return s.res, nil
	}
	s.rec = snapRecord{}
	return s.fresh(ctx)
}

// resumeShutOff continues the snapshot of a shut-off VM: forward (a
// settling tidy merges it off again), or on with an interrupted undo.
func (s *snap) resumeShutOff(ctx context.Context) (SnapshotResult, error) {
	st, err := s.h.domainState(ctx, s.req.Domain)
	if err != nil {
		return s.res, err
	}
	if st.active {
		for _, d := range s.rec.Disks {
			if d.Phase != dkOverlay {
				return s.res, fmt.Errorf("%w: %s was started while its disks were being swapped", ErrInconsistent, s.req.Domain)
			}
		}
	}
	if s.rec.Phase == phRollingBack {
		if err := s.undoShutOff(s.recorded()); err != nil {
			return s.res, err
		}
		return s.res, s.rolledBack()
	}
	return s.shutOff(ctx)
}

// rolledBack is the error of a re-run that finished a rollback: the kind
// of the failure that started it.
func (s *snap) rolledBack() error {
	return fmt.Errorf("%w (rolled back after an interruption: the VM is on its own disks)", s.recorded())
}

// recorded is the failure that started the record's rollback, as the
// record keeps it: its text, and its kind for errors.Is, so that a re-run
// that ends the rollback with an error of its own still answers the code
// of that failure.
func (s *snap) recorded() error {
	return snapClasses.recorded(s.rec.Failure, s.rec.Kind, ErrInconsistent)
}

// running saves the VM and goes on with afterSave.
func (s *snap) running(ctx context.Context) (SnapshotResult, error) {
	stateFile := s.stateFile()
	if err := hostio.CheckPath(stateFile); err != nil {
		return s.res, wrap(ErrSaveFailed, err, "%s", stateFile)
	}
	live, err := s.liveSaves()
	if err != nil {
		return s.res, wrap(ErrSaveFailed, err, "%s", s.req.Domain)
	}
	s.rec.Live, s.rec.Bounded = live, false
	if live {
		if err := s.planInterims(); err != nil {
			return s.res, s.abandon(err)
		}
	}
	if err := s.save(phSaving); err != nil {
		return s.res, s.abandon(err)
	}
	// A failed save (e.g. ENOSPC) leaves the VM running: stop there.
	s.watch = s.h.watchPause(s.req.Domain)
	defer s.watch.close()
	t0 := time.Now()
	err = s.saveState(ctx, stateFile)
	s.res.Save = time.Since(t0)
	if err == nil && !format.IsSaveImageAt(stateFile) {
		err = errors.New("no complete save image written")
	}
	if err != nil {
		return s.res, s.saveFailed(ctx, err)
	}
	if err := s.save(phSaved); err != nil {
		// The VM is down: it must come back.
		return s.fail(ctx, err)
	}
	return s.afterSave(ctx, t0)
}

// liveSaves tells whether the memory is saved live: if asked for and the
// domain is persistent (a transient one would be gone once halted).
func (s *snap) liveSaves() (bool, error) {
	if !s.req.Live {
		return false, nil
	}
	var live bool
	err := s.h.withDomain(s.req.Domain, func(_ *lv.Connect, d *lv.Domain) error {
		var err error
		live, err = d.IsPersistent()
		return err
	})
	return live, err
}

// saveState writes the running VM's memory to stateFile and leaves the
// domain shut off: live while the guest runs if the record says so, else
// a plain save with the recorded XML.
func (s *snap) saveState(ctx context.Context, stateFile hostio.Path) error {
	if !s.rec.Live {
		return s.h.op("save "+s.req.Domain+" to "+stateFile.String(), func() error {
			return s.h.withDomain(s.req.Domain, func(_ *lv.Connect, d *lv.Domain) error {
				return d.SaveFlags(stateFile.String(), s.rec.SaveXML, 0)
			})
		})
	}
	var out saveOutcome
	err := s.h.op("live save "+s.req.Domain+" to "+stateFile.String(), func() error {
		var err error
		out, err = s.h.liveSave(ctx, s.req.Domain, stateFile.String(), s.rec.Disks, s.req.Bound, s.liveBudget)
		return err
	})
	s.rec.Bounded = out.bounded
	s.res.Live, s.res.Bounded = true, out.bounded
	return err
}

// saveFailed makes sure the VM still runs after a failed save and reports it.
// A lost connection decides nothing: the record still says saving, and the
// re-run looks at the domain once libvirtd answers again (after a restart
// libvirt no longer says that a save shut the domain off).
func (s *snap) saveFailed(ctx context.Context, cause error) error {
	err := wrap(ErrSaveFailed, cause, "%s", s.req.Domain)
	if IsTransient(cause) {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	if werr := s.h.waitNoJob(ctx, s.req.Domain); werr != nil {
		return fmt.Errorf("%w (and the VM may be down: %v)", err, werr)
	}
	if s.rec.Live {
		return s.liveSaveFailed(ctx, err)
	}
	st, serr := s.h.domainState(ctx, s.req.Domain)
	if serr != nil {
		return fmt.Errorf("%w (and the VM may be down: %v)", err, serr)
	}
	if !st.active {
		switch berr := s.backAfterSave(ctx); {
		case errors.Is(berr, ErrSaveFailed):
			err = berr // running again, booted: say so
		case berr != nil:
			return fmt.Errorf("%w (and the VM may be down: %v)", err, berr)
		}
	}
	if rerr := s.h.seam.Remove(s.stateFile()); rerr != nil {
		return fmt.Errorf("%w (and %v)", err, rerr)
	}
	if rerr := s.settled(); rerr != nil {
		return fmt.Errorf("%w (and %v)", err, rerr)
	}
	return err
}

// backAfterSave brings back a VM that was running when its save began and
// is shut off now, before any disk moved: from the save image when it is
// complete (with the XML the record holds), else booted from its own disks,
// its memory lost with the save (e.g. libvirtd died with it). A VM is never
// left stopped because its backup failed.
func (s *snap) backAfterSave(ctx context.Context) error {
	if format.IsSaveImageAt(s.stateFile()) {
		return s.h.op("restore "+s.req.Domain+" from "+s.stateFile().String(), func() error {
			return s.h.restore(ctx, s.req.Domain, s.stateFile().String(), s.rec.SaveXML)
		})
	}
	if err := s.h.op("start "+s.req.Domain, func() error { return s.h.start(s.req.Domain) }); err != nil {
		return fmt.Errorf("start %s from its disks: %w", s.req.Domain, err)
	}
	return fmt.Errorf("%w: %s: the save was cut short and the VM's memory lost with it; it was started again from its own disks",
		ErrSaveFailed, s.req.Domain)
}

// restore brings the saved domain back. If the connection drops, the
// restore may have happened anyway: look before trying again, since a
// second restore would fail on the running domain and trigger a rollback.
func (h *Hypervisor) restore(ctx context.Context, domain, stateFile, xml string) error {
	err := h.do(func(c *lv.Connect) error { return c.DomainRestoreFlags(stateFile, xml, 0) })
	if err == nil || !IsTransient(err) {
		return err
	}
	return h.doRetry(ctx, func(c *lv.Connect) error {
		if d, lerr := c.LookupDomainByName(domain); lerr == nil {
			active, aerr := d.IsActive()
			d.Free()
			if aerr != nil {
				return aerr
			}
			if active {
				return nil
			}
		} else if !errors.Is(lerr, lv.ERR_NO_DOMAIN) {
			return lerr
		}
		return c.DomainRestoreFlags(stateFile, xml, 0)
	})
}

// fail rolls a running VM's snapshot back after the save. A lost
// connection during a live one decides nothing: the guest runs on, and the
// re-run goes on from the record and what libvirt says then (rolling back
// without libvirtd cannot finish, and would fail a backup a restarted
// libvirtd lets complete).
func (s *snap) fail(ctx context.Context, err error) (SnapshotResult, error) {
	if s.rec.Live && IsTransient(err) {
		return s.res, err
	}
	if rerr := s.rollback(ctx, err); rerr != nil {
		return s.res, rerr
	}
	return s.res, fmt.Errorf("%w (rolled back: the VM runs on its own disks)", err)
}

// afterSave does everything from the saved state on, each phase once:
// disks, XML, restore, state file.
func (s *snap) afterSave(ctx context.Context, t0 time.Time) (SnapshotResult, error) {
	rec := &s.rec
	if !rec.at(phXML) {
		if err := s.swapDisks(ctx); err != nil {
			return s.fail(ctx, err)
		}
		if err := s.writeXML(); err != nil {
			return s.fail(ctx, err)
		}
		// Last: a disk switched live stays so (see liveRollback).
		if rec.Live {
			if err := s.switchDisks(ctx); err != nil {
				return s.fail(ctx, err)
			}
		}
		if err := s.save(phXML); err != nil {
			return s.fail(ctx, err)
		}
	}
	if !rec.at(phRestored) {
		if rec.Live {
			// The guest ran on all along: nothing to restore.
			s.res.Downtime = s.res.Save
		} else if err := s.restoreOnOverlays(ctx, t0); err != nil {
			return s.fail(ctx, err)
		}
		if d, ok := s.watch.measure(); ok {
			s.res.Downtime = d
		}
		if err := s.h.verifyOverlays(s.req.Domain, s.res.Disks); err != nil {
			return s.fail(ctx, err)
		}
		if err := s.save(phRestored); err != nil {
			// The VM runs on its overlays; a re-run finishes.
			return s.res, err
		}
	}
	if !rec.at(phStateMoved) {
		if err := s.moveState(); err != nil {
			// The VM runs on its overlays; a re-run finishes the move.
			return s.res, wrap(ErrStateFile, err, "%s", s.statePath)
		}
		if err := s.save(phStateMoved); err != nil {
			return s.res, err
		}
	}
	return s.res, s.settled()
}

// restoreOnOverlays brings the saved VM back on its overlays, announced
// first; t0 is when the save began.
func (s *snap) restoreOnOverlays(ctx context.Context, t0 time.Time) error {
	if err := s.save(phRestoring); err != nil {
		return err
	}
	st, err := s.h.domainState(ctx, s.req.Domain)
	if err != nil {
		return wrap(ErrRestoreFailed, err, "%s", s.req.Domain)
	}
	t1 := time.Now()
	if !st.active {
		err = s.h.fail("restore")
		if err == nil {
			err = s.h.op("restore "+s.req.Domain+" from "+s.stateFile().String(), func() error {
				return s.h.restore(context.WithoutCancel(ctx), s.req.Domain, s.stateFile().String(), s.rec.SaveXML)
			})
		}
	}
	s.res.Restore = time.Since(t1)
	s.res.Downtime = time.Since(t0)
	if err != nil {
		return wrap(ErrRestoreFailed, err, "%s", s.req.Domain)
	}
	return nil
}

// moveState brings the state file from the RAM disk into RetainDir: a
// copy (another filesystem), renamed into place, then the RAM disk's file
// removed. Run again, it redoes what the record announced.
func (s *snap) moveState() error {
	if !s.rec.StateOnRAM || s.ramState.IsZero() {
		return s.h.seam.Chmod(s.statePath, stateMode)
	}
	if !hostio.Exists(s.ramState) {
		if hostio.IsRegular(s.statePath) {
			return nil // moved; only the removal was left, and it ran
		}
		return fmt.Errorf("%w: %s and %s are both gone", ErrMissingFile, s.ramState, s.statePath)
	}
	tmp := s.req.RetainDir.MustJoin(s.req.StateName + ".tmp")
	err := s.h.op("copy "+s.ramState.String()+" to "+tmp.String(), func() error {
		in, err := hostio.Open(s.ramState)
		if err != nil {
			return err
		}
		defer in.Close()
		var plain *hostio.Seam // the copy is one point of its own
		return plain.CopyTo(tmp, in, stateMode)
	})
	if err != nil {
		var plain *hostio.Seam
		_ = plain.Remove(tmp)
		return err
	}
	if err := s.h.seam.Rename(tmp, s.statePath); err != nil {
		return err
	}
	if err := s.h.seam.SyncDir(s.req.RetainDir); err != nil {
		return err
	}
	return s.h.seam.Remove(s.ramState)
}

// writeXML writes the save XML into RetainDir: the configured mode, never
// world-readable.
func (s *snap) writeXML() error {
	if err := s.h.fail("xml"); err != nil {
		return wrap(ErrSaveXML, err, "%s", s.xmlPath)
	}
	perm := s.own.perm &^ 0o007
	if s.own.perm == 0 {
		perm = xmlMode
	}
	if err := s.h.seam.WriteFile(s.xmlPath, []byte(s.rec.SaveXML), perm); err != nil {
		return wrap(ErrSaveXML, err, "%s", s.xmlPath)
	}
	if err := s.h.seam.Chown(s.xmlPath, -1, s.own.gid); err != nil {
		return wrap(ErrSaveXML, err, "%s", s.xmlPath)
	}
	return nil
}

// swapDisks renames each image into RetainDir and creates its overlay,
// announcing each operation in the record first.
func (s *snap) swapDisks(ctx context.Context) error {
	for i := range s.rec.Disks {
		d := &s.rec.Disks[i]
		src, err := diskPath(d.Source)
		if err != nil {
			return err
		}
		ret := s.retainedPath(*d)
		if d.Phase == "" || d.Phase == dkMoving {
			if d.Phase == "" {
				d.Phase = dkMoving
				if err := s.save(s.rec.Phase); err != nil {
					return err
				}
			}
			if err := s.moveDisk(src, ret); err != nil {
				return wrap(ErrRenameImage, err, "%s", d.Source)
			}
			d.Phase = dkMoved
			if err := s.save(s.rec.Phase); err != nil {
				return err
			}
		}
		if d.Phase == dkMoved || d.Phase == dkOverlaying {
			if d.Phase == dkMoved {
				d.Phase = dkOverlaying
				if err := s.save(s.rec.Phase); err != nil {
					return err
				}
			} else if err := s.removeOverlay(src, ret); err != nil {
				return wrap(ErrCreateOverlay, err, "%s", d.Source) // a half-made one
			}
			if err := hostio.CheckPath(src); err != nil {
				return wrap(ErrCreateOverlay, err, "%s", d.Source)
			}
			err := s.h.op("create overlay "+d.Source, func() error {
				// Not the caller's ctx: a half-written overlay helps no one.
				return format.CreateOverlay(context.WithoutCancel(ctx), ret.String(), d.Format, src.String())
			})
			if err != nil {
				return wrap(ErrCreateOverlay, err, "%s", d.Source)
			}
			if err := s.own.applyAt(s.h.seam, src); err != nil {
				return err
			}
			d.Phase = dkOverlay
			if err := s.save(s.rec.Phase); err != nil {
				return err
			}
			if err := s.h.fail("overlay"); err != nil {
				return wrap(ErrCreateOverlay, err, "%s", d.Source)
			}
		}
	}
	dirs := map[hostio.Path]bool{s.req.RetainDir: true}
	for _, d := range s.rec.Disks {
		src, _ := diskPath(d.Source)
		dirs[src.Dir()] = true
	}
	for d := range dirs {
		if err := s.h.seam.SyncDir(d); err != nil {
			return wrap(ErrRenameImage, err, "sync %s", d)
		}
	}
	return nil
}

// moveDisk renames an image into RetainDir; after a crash the rename
// announced may have run already.
func (s *snap) moveDisk(src, ret hostio.Path) error {
	if hostio.Exists(ret) && !hostio.Exists(src) {
		return nil
	}
	return s.h.seam.RenameNoReplace(src, ret)
}

// removeOverlay removes what sits at a disk's path while its image is
// retained.
func (s *snap) removeOverlay(src, ret hostio.Path) error {
	if err := retainedThere(src, ret); err != nil {
		return err
	}
	return s.h.seam.Remove(src)
}

// retainedThere: what sits at a disk's path while its image is retained
// goes only while the retained image is there.
func retainedThere(src, ret hostio.Path) error {
	if !hostio.IsRegular(ret) {
		return fmt.Errorf("%w: %s is gone: %s left alone", ErrMissingFile, ret, src)
	}
	return nil
}

// verifyOverlays checks that the running domain reads each disk through its
// retained image. Restoring with an XML that says <backingStore/> opens the
// overlay alone: the guest would read zeros.
func (h *Hypervisor) verifyOverlays(domain string, disks []RetainedDisk) error {
	if err := h.fail("verify"); err != nil {
		return wrap(ErrRestoreFailed, err, "%s", domain)
	}
	var desc format.Domain
	err := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
		active, err := d.IsActive()
		if err != nil {
			return err
		}
		if !active {
			return errors.New("domain is not running after restore")
		}
		x, err := d.GetXMLDesc(0)
		if err != nil {
			return err
		}
		desc, err = format.ParseDomainXML(x)
		return err
	})
	if err != nil {
		return wrap(ErrRestoreFailed, err, "%s", domain)
	}
	for _, p := range disks {
		if got := desc.Backing[p.Target]; got != p.Retained {
			return fmt.Errorf("%w: %s: %s runs backed by %q, not %s", ErrRestoreFailed, domain, p.Target, got, p.Retained)
		}
	}
	return nil
}

// rollback brings the VM back on its original disks from the saved state,
// each part announced in the record: stop a VM our restore started on the
// overlays, disks back, then restore. nil: the VM runs on its own disks.
func (s *snap) rollback(ctx context.Context, cause error) error {
	if s.rec.Live {
		return s.liveRollback(ctx, cause)
	}
	ctx = context.WithoutCancel(ctx)
	domain := s.req.Domain
	failed := func(what string, err error) error {
		return fmt.Errorf("%w; rollback failed too: %s: %v", cause, what, err)
	}
	rerun := s.rec.Phase == phRBRestoring
	if s.rec.Phase != phRollingBack && s.rec.Phase != phRBRestoring {
		s.rec.StopFirst = s.rec.Phase == phRestoring
		s.rec.Failure, s.rec.Kind = cause.Error(), snapClasses.of(cause, nil)
		if err := s.save(phRollingBack); err != nil {
			return errors.Join(cause, err)
		}
	}
	if s.rec.Phase == phRollingBack {
		if s.rec.StopFirst {
			// Restored on the overlays for an instant: its memory comes back
			// from the same state file, so nothing it did is lost twice.
			err := s.h.op("destroy "+domain, func() error {
				_, err := s.h.onDefined(ctx, domain, func(d *lv.Domain) error {
					if active, err := d.IsActive(); err != nil || !active {
						return err
					}
					return d.Destroy()
				})
				return err
			})
			if err != nil {
				return failed("stop the restored domain", err)
			}
		}
		st, err := s.h.domainState(ctx, domain)
		if err != nil {
			return failed("domain state", err)
		}
		if st.active {
			return failed("undo the disks", fmt.Errorf("%s runs", domain))
		}
		// Restore even if some disk could not be undone: an overlay still on
		// its retained image reads the same data as the image did.
		if undoErr := s.undoDisks(); undoErr != nil {
			cause = fmt.Errorf("%w; undo failed too: %v", cause, undoErr)
		} else if err := s.h.seam.Remove(s.xmlPath); err != nil {
			cause = fmt.Errorf("%w; remove XML: %v", cause, err)
		}
		if err := s.save(phRBRestoring); err != nil {
			return errors.Join(cause, err)
		}
	}
	st, err := s.h.domainState(ctx, domain)
	if err == nil && !st.active && rerun {
		// The undo may have failed before (an I/O error): once more, as
		// far as it can; what it cannot undo is an overlay on its
		// retained image, which the tidy of the failed leaf merges.
		if undoErr := s.undoDisks(); undoErr != nil {
			cause = fmt.Errorf("%w; undo failed too: %v", cause, undoErr)
		}
	}
	if err == nil && !st.active {
		err = s.h.op("restore "+domain+" from "+s.stateFile().String(), func() error {
			return s.h.restore(ctx, domain, s.stateFile().String(), s.rec.SaveXML)
		})
	}
	if err != nil && !IsTransient(err) {
		// Its memory cannot be resumed (a state file cut short): boot it
		// from its own disks rather than leave it stopped.
		if serr := s.h.op("start "+domain, func() error { return s.h.start(domain) }); serr != nil {
			err = errors.Join(err, serr)
		} else {
			cause = fmt.Errorf("%w; its memory could not be resumed (%v): started again from its own disks", cause, err)
			err = nil
		}
	}
	if err != nil {
		return failed(fmt.Sprintf("restore %s on its own disks from %s", domain, s.stateFile()), err)
	}
	if err := s.h.seam.Remove(s.stateFile()); err != nil { // the VM has moved on from it
		return failed("remove the state file", err)
	}
	if err := s.settled(); err != nil {
		return errors.Join(cause, err)
	}
	return nil
}

// undoDisks removes overlays and renames the images back, last disk first,
// as far as the record says each went.
func (s *snap) undoDisks() error {
	for i := len(s.rec.Disks) - 1; i >= 0; i-- {
		d := &s.rec.Disks[i]
		if d.Phase == "" {
			continue // never moved
		}
		if err := s.undoDisk(d); err != nil {
			return fmt.Errorf("undo %s: %w", d.Target, err)
		}
		d.Phase = ""
		if err := s.save(s.rec.Phase); err != nil {
			return err
		}
	}
	dirs := map[hostio.Path]bool{s.req.RetainDir: true}
	for _, d := range s.rec.Disks {
		src, _ := diskPath(d.Source)
		dirs[src.Dir()] = true
	}
	for d := range dirs {
		_ = s.h.seam.SyncDir(d)
	}
	return nil
}

// undoDisk puts a disk's image back at its path if it was retained: what
// sits at its path meanwhile is ours.
func (s *snap) undoDisk(d *diskRecord) error {
	src, err := diskPath(d.Source)
	if err != nil {
		return err
	}
	ret := s.retainedPath(*d)
	if !hostio.Exists(ret) {
		return nil
	}
	if !hostio.Exists(src) {
		return s.h.seam.RenameNoReplace(ret, src)
	}
	if err := retainedThere(src, ret); err != nil {
		return err
	}
	// Over the overlay in one rename: the disk's path never goes empty, so
	// an undo that fails here leaves the overlay, which reads the image's
	// data, and the VM can still be restored on it.
	return s.h.seam.Rename(ret, src)
}

// shutOff snapshots a VM that is not running: no state to save, the VM is
// never started. Run again, it goes on from the record.
func (s *snap) shutOff(ctx context.Context) (SnapshotResult, error) {
	if s.rec.Phase == "" {
		if err := s.save(phPlanned); err != nil {
			return s.res, err
		}
	}
	if !s.rec.at(phStateWrite) {
		if err := s.save(phStateWrite); err != nil {
			return s.res, s.abandon(err)
		}
	}
	if !s.rec.at(phXML) {
		if err := s.h.seam.WriteFile(s.statePath, []byte(format.Placeholder), stateMode); err != nil {
			return s.res, s.undoShutOff(wrap(ErrStateFile, err, "%s", s.statePath))
		}
		if err := s.swapDisks(ctx); err != nil {
			return s.res, s.undoShutOff(err)
		}
		if err := s.writeXML(); err != nil {
			return s.res, s.undoShutOff(err)
		}
		if err := s.save(phXML); err != nil {
			return s.res, err
		}
	}
	return s.res, s.settled()
}

// undoShutOff puts a shut-off VM's disks back and removes its files; it
// returns cause, or why the undo failed too.
func (s *snap) undoShutOff(cause error) error {
	if s.rec.Phase != phRollingBack {
		s.rec.Failure, s.rec.Kind = cause.Error(), snapClasses.of(cause, nil)
		if err := s.save(phRollingBack); err != nil {
			return errors.Join(cause, err)
		}
	}
	if st, err := s.h.domainState(context.Background(), s.req.Domain); err != nil || st.active {
		return fmt.Errorf("%w; undo failed too: %s may run on its overlays (%v)", cause, s.req.Domain, err)
	}
	if err := s.undoDisks(); err != nil {
		return fmt.Errorf("%w; undo failed too: %v", cause, err)
	}
	for _, p := range []hostio.Path{s.xmlPath, s.statePath} {
		if err := s.h.seam.Remove(p); err != nil {
			return fmt.Errorf("%w; undo failed too: %v", cause, err)
		}
	}
	if err := s.settled(); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// snapClasses are the classes a snapshot's record keeps (Kind).
var snapClasses = failureClasses{ErrNoSpace, ErrSaveFailed, ErrRenameImage, ErrCreateOverlay, ErrOwnership,
	ErrPermission, ErrSaveXML, ErrStateFile, ErrRestoreFailed, ErrCorruptImage, ErrMissingFile,
	ErrConnection, ErrDiskMismatch, ErrDomainNotFound}
