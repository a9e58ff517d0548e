package libvirt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lv "libvirt.org/go/libvirt"
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
	Disks []Disk
	// RAMDisk holds the state file while the VM is down, when it has room;
	// else the state goes straight to RetainDir. Empty: always RetainDir.
	RAMDisk string
	// RetainDir is this backup's retain directory. It must exist, on the
	// filesystem of the images (the images are renamed into it).
	RetainDir          string
	StateName, XMLName string // file names inside RetainDir
	Ownership          Ownership
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
	Save       time.Duration // the save call
	Restore    time.Duration // the restore call
	Downtime   time.Duration // from the save call until the domain runs again
	Total      time.Duration
}

// statePlaceholder is the state file of a VM that was not running, as the
// original system wrote it.
const statePlaceholder = "Machine is not running, no state file\n"

// diskStep is where one disk stands in the Snapshot sequence; Snapshot may
// be run again after a crash at any point and goes on from there.
type diskStep int

const (
	diskUntouched diskStep = iota // image at its source, nothing in RetainDir
	diskMoved                     // image renamed into RetainDir, no overlay yet
	diskDone                      // overlay at the source, backed by the retained image
)

type diskPlan struct {
	RetainedDisk
	step   diskStep
	format string // of the image being retained
}

// Snapshot saves a running VM's state, moves its disk images into RetainDir,
// puts an empty overlay backed by each retained image in its place and
// brings the VM back from the saved state (see the package doc). A shut-off
// VM stays shut off and gets a placeholder state file.
//
// Everything that can be checked is checked before the VM is touched. Once
// the VM is down, any failure is rolled back so that the VM runs again on
// its own disks, and the error is returned. Snapshot is idempotent: run
// again after a crash it finishes what was started.
func (h *Hypervisor) Snapshot(ctx context.Context, req SnapshotRequest) (SnapshotResult, error) {
	start := time.Now()
	unlock := h.lockDomain(req.Domain)
	defer unlock()
	res, err := h.snapshot(ctx, req)
	res.Total = time.Since(start)
	return res, err
}

func (r SnapshotRequest) paths() (state, xml, ramState string) {
	state = filepath.Join(r.RetainDir, r.StateName)
	xml = filepath.Join(r.RetainDir, r.XMLName)
	if r.RAMDisk != "" {
		ramState = filepath.Join(r.RAMDisk, r.StateName)
	}
	return
}

func (r SnapshotRequest) check() error {
	if r.Domain == "" || r.RetainDir == "" {
		return fmt.Errorf("%w: snapshot needs a domain and a retain directory", ErrMissingFile)
	}
	for _, n := range []string{r.StateName, r.XMLName} {
		if n == "" || n != filepath.Base(n) || n == "." || n == ".." {
			return fmt.Errorf("%w: %q is not a file name", ErrMissingFile, n)
		}
	}
	if fi, err := os.Stat(r.RetainDir); err != nil || !fi.IsDir() {
		return wrap(ErrMissingFile, err, "retain directory %s", r.RetainDir)
	}
	if r.RAMDisk != "" {
		if fi, err := os.Stat(r.RAMDisk); err != nil || !fi.IsDir() {
			return wrap(ErrInvalidRAMDisk, err, "%s", r.RAMDisk)
		}
	}
	return nil
}

func (h *Hypervisor) snapshot(ctx context.Context, req SnapshotRequest) (SnapshotResult, error) {
	var res SnapshotResult
	if err := req.check(); err != nil {
		return res, err
	}
	own, err := resolveOwnership(req.Ownership)
	if err != nil {
		return res, err
	}
	statePath, xmlPath, ramState := req.paths()
	res.StateFile, res.XMLFile = statePath, xmlPath

	// A complete save image left by an interrupted run is the VM's memory:
	// it decides whether the VM counts as running.
	saved := ""
	for _, p := range []string{ramState, statePath} {
		if p != "" && isSaveImage(p) {
			saved = p
			break
		}
	}

	info, desc, err := h.describe(req.Domain, lv.DOMAIN_XML_MIGRATABLE)
	if errors.Is(err, ErrDomainNotFound) && saved != "" && !info.Running {
		// A transient domain disappears once saved: its XML is in the image.
		x, xerr := h.saveImageXML(saved)
		if xerr != nil {
			return res, xerr
		}
		if desc, err = parseDomainXML(x); err == nil {
			info.XML = x
		}
	}
	if err != nil {
		return res, err
	}
	if len(desc.Other) > 0 {
		return res, fmt.Errorf("%w: disks %v are not image files", ErrDiskMismatch, desc.Other)
	}
	if err := sameDisks(req.Disks, desc.Disks); err != nil {
		return res, err
	}
	plans, err := planDisks(ctx, req.RetainDir, desc.Disks)
	if err != nil {
		return res, err
	}
	for _, p := range plans {
		res.Disks = append(res.Disks, p.RetainedDisk)
	}
	done, untouched := 0, 0
	for _, p := range plans {
		switch p.step {
		case diskDone:
			done++
		case diskUntouched:
			untouched++
		}
	}

	switch {
	case info.Running && len(plans) > 0 && done == len(plans):
		// Snapshot taken and VM back: only the files may be missing.
		return h.finishRunning(ctx, req, desc, info.XML, res, ramState)
	case info.Running && untouched != len(plans):
		return res, fmt.Errorf("%w: %s runs while only some disks are snapshotted", ErrInconsistent, req.Domain)
	case info.Running:
		if saved != "" {
			// Left by a run that was rolled back: the VM has run on since.
			if err := os.Remove(saved); err != nil {
				return res, wrap(ErrStateFile, err, "remove stale state file")
			}
		}
		return h.snapshotRunning(ctx, req, desc, info.XML, plans, own, res)
	case saved != "":
		// Interrupted after the save: the VM is down, its memory in saved.
		res.WasRunning = true
		x, err := h.saveImageXML(saved)
		if err != nil {
			return res, err
		}
		saveXML, err := stripBackingStore(x)
		if err != nil {
			return res, err
		}
		t0 := time.Now()
		return h.afterSave(ctx, req, plans, own, saved, saveXML, t0, res)
	default:
		return h.snapshotShutOff(ctx, req, info.XML, plans, own, res)
	}
}

// planDisks finds where each disk stands, and refuses what it cannot
// explain before anything is touched.
func planDisks(ctx context.Context, retainDir string, disks []Disk) ([]diskPlan, error) {
	retainDev, err := device(retainDir)
	if err != nil {
		return nil, wrap(ErrMissingFile, err, "retain directory")
	}
	seen := map[string]string{}
	var plans []diskPlan
	for _, d := range disks {
		p := diskPlan{RetainedDisk: RetainedDisk{
			Target: d.Target, Source: d.Source,
			Retained: filepath.Join(retainDir, filepath.Base(d.Source)),
		}}
		if other, ok := seen[p.Retained]; ok {
			return nil, fmt.Errorf("%w: %s and %s would both be retained as %s", ErrRenameImage, other, d.Target, p.Retained)
		}
		seen[p.Retained] = d.Target
		if dev, err := device(filepath.Dir(d.Source)); err != nil {
			return nil, wrap(ErrMissingFile, err, "image directory of %s", d.Target)
		} else if dev != retainDev {
			return nil, fmt.Errorf("%w: %s is not on the filesystem of %s", ErrRenameImage, retainDir, d.Source)
		}
		srcFI, srcErr := os.Lstat(d.Source)
		_, retErr := os.Lstat(p.Retained)
		switch {
		case srcErr == nil && !srcFI.Mode().IsRegular():
			return nil, fmt.Errorf("%w: %s is not a regular file", ErrDiskMismatch, d.Source)
		case srcErr == nil && retErr != nil:
			im, err := imageInfo(ctx, d.Source)
			if err != nil {
				return nil, wrap(ErrCorruptImage, err, "%s", d.Source)
			}
			if im.BackingFile != "" && filepath.Dir(im.BackingFile) == filepath.Clean(retainDir) {
				return nil, fmt.Errorf("%w: %s is an overlay of %s, which is gone", ErrMissingFile, d.Source, im.BackingFile)
			}
			p.step, p.format = diskUntouched, im.Format
		case srcErr == nil:
			im, err := imageInfo(ctx, d.Source)
			if err != nil || im.BackingFile != p.Retained {
				return nil, fmt.Errorf("%w: %s already exists and %s is not its overlay", ErrRenameImage, p.Retained, d.Source)
			}
			p.step = diskDone
		case errors.Is(srcErr, os.ErrNotExist) && retErr == nil:
			im, err := imageInfo(ctx, p.Retained)
			if err != nil {
				return nil, wrap(ErrCorruptImage, err, "%s", p.Retained)
			}
			p.step, p.format = diskMoved, im.Format
		default:
			return nil, wrap(ErrMissingFile, srcErr, "image of %s", d.Target)
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// estimateState is the size a save image of the domain needs: its RAM and
// video RAM, plus room for device state and the embedded XML.
func (h *Hypervisor) estimateState(d domainDesc) uint64 {
	if h.stateSize != nil {
		return h.stateSize(d)
	}
	return (d.MemoryKiB+d.VideoKiB)*1024 + 16<<20
}

// overlayRoom is what one new overlay may take.
const overlayRoom = 1 << 20

func (h *Hypervisor) snapshotRunning(ctx context.Context, req SnapshotRequest, desc domainDesc, liveXML string,
	plans []diskPlan, own owner, res SnapshotResult) (SnapshotResult, error) {
	statePath, _, ramState := req.paths()
	// Room first: the state ends in RetainDir whichever way it goes.
	need := h.estimateState(desc)
	free, err := freeBytes(req.RetainDir)
	if err != nil {
		return res, wrap(ErrNoSpace, err, "retain directory")
	}
	if free < need+uint64(len(plans))*overlayRoom {
		return res, fmt.Errorf("%w: %s has %d MiB free, the state file needs about %d MiB",
			ErrNoSpace, req.RetainDir, free>>20, need>>20)
	}
	stateFile := statePath
	if ramState != "" {
		if f, err := freeBytes(req.RAMDisk); err == nil && f >= need {
			stateFile = ramState
		}
	}
	saveXML, err := stripBackingStore(liveXML)
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	// Save. A failed save (e.g. ENOSPC) leaves the VM running: stop here.
	t0 := time.Now()
	err = h.do(func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(req.Domain)
		if err != nil {
			return err
		}
		defer d.Free()
		return d.SaveFlags(stateFile, saveXML, 0)
	})
	res.Save = time.Since(t0)
	res.WasRunning = true
	if err != nil {
		return res, h.saveFailed(ctx, req.Domain, stateFile, saveXML, err)
	}
	if !isSaveImage(stateFile) {
		return res, h.saveFailed(ctx, req.Domain, stateFile, saveXML, errors.New("no complete save image written"))
	}
	return h.afterSave(ctx, req, plans, own, stateFile, saveXML, t0, res)
}

// saveFailed makes sure the VM still runs after a failed save and reports it.
func (h *Hypervisor) saveFailed(ctx context.Context, domain, stateFile, saveXML string, cause error) error {
	err := wrap(ErrSaveFailed, cause, "%s", domain)
	var st lv.DomainState
	serr := h.doRetry(context.WithoutCancel(ctx), func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(domain)
		if err != nil {
			return err
		}
		defer d.Free()
		st, _, err = d.GetState()
		if err != nil || st != lv.DOMAIN_SHUTOFF {
			return err
		}
		if !isSaveImage(stateFile) {
			return errors.New("domain is shut off and there is no save image")
		}
		// The save finished after all: bring the VM back from it.
		return c.DomainRestoreFlags(stateFile, saveXML, 0)
	})
	switch {
	case serr != nil:
		return fmt.Errorf("%w (and the VM may be down: %v)", err, serr)
	case st == lv.DOMAIN_RUNNING || st == lv.DOMAIN_SHUTOFF:
		// A partial file, or one the VM was just restored from. Not while
		// paused: libvirt may still be writing it.
		os.Remove(stateFile)
	}
	return err
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

// afterSave does everything from the saved state on: disks, XML, restore,
// state file. On failure it rolls back to the VM on its own disks.
func (h *Hypervisor) afterSave(ctx context.Context, req SnapshotRequest, plans []diskPlan, own owner,
	stateFile, saveXML string, t0 time.Time, res SnapshotResult) (SnapshotResult, error) {
	statePath, xmlPath, _ := req.paths()
	fail := func(err error) (SnapshotResult, error) {
		if rerr := h.rollback(ctx, req.Domain, plans, stateFile, saveXML, xmlPath); rerr != nil {
			return res, fmt.Errorf("%w; rollback failed too: %v", err, rerr)
		}
		return res, fmt.Errorf("%w (rolled back: the VM runs on its own disks)", err)
	}
	if err := h.swapDisks(ctx, plans, own); err != nil {
		return fail(err)
	}
	if err := h.fail("xml"); err != nil {
		return fail(wrap(ErrSaveXML, err, "%s", xmlPath))
	}
	if err := writeFileSync(xmlPath, []byte(saveXML), 0o644); err != nil {
		return fail(wrap(ErrSaveXML, err, "%s", xmlPath))
	}

	t1 := time.Now()
	err := h.fail("restore")
	if err == nil {
		err = h.restore(context.WithoutCancel(ctx), req.Domain, stateFile, saveXML)
	}
	res.Restore = time.Since(t1)
	res.Downtime = time.Since(t0)
	if err != nil {
		return fail(wrap(ErrRestoreFailed, err, "%s", req.Domain))
	}
	if err := h.verifyOverlays(req.Domain, plans); err != nil {
		return fail(err)
	}

	if stateFile != statePath {
		if err := moveFile(stateFile, statePath); err != nil {
			// The VM runs on its overlays; a rerun finishes the move.
			return res, wrap(ErrStateFile, err, "%s", statePath)
		}
	}
	return res, nil
}

// swapDisks renames each image into RetainDir and creates its overlay.
func (h *Hypervisor) swapDisks(ctx context.Context, plans []diskPlan, own owner) error {
	for i := range plans {
		p := &plans[i]
		if p.step == diskUntouched {
			if err := os.Rename(p.Source, p.Retained); err != nil {
				return wrap(ErrRenameImage, err, "%s", p.Source)
			}
			p.step = diskMoved
		}
		if p.step == diskMoved {
			// Not the caller's ctx: a half-written overlay helps no one.
			if err := createOverlay(context.WithoutCancel(ctx), p.Retained, p.format, p.Source); err != nil {
				os.Remove(p.Source)
				return wrap(ErrCreateOverlay, err, "%s", p.Source)
			}
			p.step = diskDone
			if err := own.apply(p.Source); err != nil {
				return err
			}
			if err := h.fail("overlay"); err != nil {
				return wrap(ErrCreateOverlay, err, "%s", p.Source)
			}
		}
	}
	dirs := map[string]bool{}
	for _, p := range plans {
		dirs[filepath.Dir(p.Source)] = true
		dirs[filepath.Dir(p.Retained)] = true
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return wrap(ErrRenameImage, err, "sync %s", d)
		}
	}
	return nil
}

// verifyOverlays checks that the running domain reads each disk through its
// retained image. Restoring with an XML that says <backingStore/> opens the
// overlay alone: the guest would read zeros.
func (h *Hypervisor) verifyOverlays(domain string, plans []diskPlan) error {
	if err := h.fail("verify"); err != nil {
		return wrap(ErrRestoreFailed, err, "%s", domain)
	}
	var desc domainDesc
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
		desc, err = parseDomainXML(x)
		return err
	})
	if err != nil {
		return wrap(ErrRestoreFailed, err, "%s", domain)
	}
	for _, p := range plans {
		if got := desc.Backing[p.Target]; got != p.Retained {
			return fmt.Errorf("%w: %s: %s runs backed by %q, not %s", ErrRestoreFailed, domain, p.Target, got, p.Retained)
		}
	}
	return nil
}

// rollback brings the VM back on its original disks from the saved state.
// Order matters: stop a wrongly restored VM, then disks, then restore.
func (h *Hypervisor) rollback(ctx context.Context, domain string, plans []diskPlan, stateFile, saveXML, xmlPath string) error {
	ctx = context.WithoutCancel(ctx)
	err := h.doRetry(ctx, func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(domain)
		if err != nil {
			if errors.Is(err, lv.ERR_NO_DOMAIN) {
				return nil // transient domain, not restored
			}
			return err
		}
		defer d.Free()
		if active, err := d.IsActive(); err != nil || !active {
			return err
		}
		// Restored on the overlays for an instant: its memory comes back
		// from the same state file, so nothing it did is lost twice.
		return d.Destroy()
	})
	if err != nil {
		return fmt.Errorf("stop the restored domain: %w", err)
	}
	// Restore even if some disk could not be undone: an overlay still on
	// its retained image reads the same data as the image did.
	undoErr := undoDisks(plans)
	if undoErr == nil {
		os.Remove(xmlPath)
	}
	if err := h.restore(ctx, domain, stateFile, saveXML); err != nil {
		return errors.Join(undoErr, fmt.Errorf("restore %s on its own disks from %s: %w", domain, stateFile, err))
	}
	if undoErr != nil {
		return fmt.Errorf("VM restored, but %w", undoErr)
	}
	os.Remove(stateFile) // the VM has moved on from it
	return nil
}

// undoDisks removes overlays and renames the images back, last disk first.
func undoDisks(plans []diskPlan) error {
	for i := len(plans) - 1; i >= 0; i-- {
		p := plans[i]
		if !exists(p.Retained) {
			continue // never moved
		}
		if exists(p.Source) {
			im, err := ImageInfo(p.Source)
			if err != nil || im.BackingFile != p.Retained {
				return fmt.Errorf("undo %s: %s is not our overlay, left alone", p.Target, p.Source)
			}
			if err := os.Remove(p.Source); err != nil {
				return fmt.Errorf("undo %s: %w", p.Target, err)
			}
		}
		if err := os.Rename(p.Retained, p.Source); err != nil {
			return fmt.Errorf("undo %s: %w", p.Target, err)
		}
	}
	for _, p := range plans {
		_ = syncDir(filepath.Dir(p.Source))
		_ = syncDir(filepath.Dir(p.Retained))
	}
	return nil
}

// snapshotShutOff handles a VM that is not running: no state to save, the
// VM is never started.
func (h *Hypervisor) snapshotShutOff(ctx context.Context, req SnapshotRequest, domXML string,
	plans []diskPlan, own owner, res SnapshotResult) (SnapshotResult, error) {
	statePath, xmlPath, _ := req.paths()
	x, err := stripBackingStore(domXML)
	if err != nil {
		return res, err
	}
	fail := func(err error) (SnapshotResult, error) {
		if uerr := undoDisks(plans); uerr != nil {
			return res, fmt.Errorf("%w; undo failed too: %v", err, uerr)
		}
		os.Remove(xmlPath)
		os.Remove(statePath)
		return res, err
	}
	if err := writeFileSync(statePath, []byte(statePlaceholder), 0o644); err != nil {
		return res, wrap(ErrStateFile, err, "%s", statePath)
	}
	if err := h.swapDisks(ctx, plans, own); err != nil {
		return fail(err)
	}
	if err := h.fail("xml"); err != nil {
		return fail(wrap(ErrSaveXML, err, "%s", xmlPath))
	}
	if err := writeFileSync(xmlPath, []byte(x), 0o644); err != nil {
		return fail(wrap(ErrSaveXML, err, "%s", xmlPath))
	}
	return res, nil
}

// finishRunning completes a Snapshot whose VM already runs on its overlays.
func (h *Hypervisor) finishRunning(ctx context.Context, req SnapshotRequest, desc domainDesc, liveXML string,
	res SnapshotResult, ramState string) (SnapshotResult, error) {
	statePath, xmlPath, _ := req.paths()
	plans := make([]diskPlan, len(res.Disks))
	for i, d := range res.Disks {
		plans[i] = diskPlan{RetainedDisk: d, step: diskDone}
	}
	if err := h.verifyOverlays(req.Domain, plans); err != nil {
		return res, fmt.Errorf("%w: %w", ErrInconsistent, err)
	}
	switch {
	case exists(statePath):
		if ramState != "" && exists(ramState) {
			os.Remove(ramState) // the move was cut short after its rename
		}
	case ramState != "" && exists(ramState):
		if err := moveFile(ramState, statePath); err != nil {
			return res, wrap(ErrStateFile, err, "%s", statePath)
		}
	default:
		return res, fmt.Errorf("%w: %s runs on its overlays but its state file is gone", ErrMissingFile, req.Domain)
	}
	res.WasRunning = isSaveImage(statePath)
	if !exists(xmlPath) {
		x, err := stripBackingStore(liveXML)
		if err != nil {
			return res, err
		}
		if err := writeFileSync(xmlPath, []byte(x), 0o644); err != nil {
			return res, wrap(ErrSaveXML, err, "%s", xmlPath)
		}
	}
	return res, nil
}

func (h *Hypervisor) saveImageXML(path string) (string, error) {
	var x string
	err := h.do(func(c *lv.Connect) error {
		var err error
		x, err = c.DomainSaveImageGetXMLDesc(path, 0)
		return err
	})
	if err != nil {
		return "", wrap(ErrMissingFile, err, "read the XML of %s", path)
	}
	return x, nil
}
