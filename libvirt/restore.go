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

// RestoreRequest asks to put a VM back as a backup saw it. Disks map each
// backed-up image (Retained, already copied back into the retain directory,
// on the images' filesystem) to the path it returns to (Source).
type RestoreRequest struct {
	Domain    string
	Disks     []RetainedDisk
	StateFile string // a save image, or the placeholder of a shut-off VM
	XMLFile   string // the domain XML saved with the backup
	Ownership Ownership
}

// RestoreResult reports whether the VM was brought back running.
type RestoreResult struct {
	Running  bool
	Duration time.Duration
}

// preRestore is the suffix of a live image kept aside until the restore
// has worked; it is also the proof, on a rerun, that a disk was moved.
const preRestore = ".pre-restore"

// Restore stops the VM (destroy: its current state is being replaced),
// renames each backed-up image over its live one, and restores the VM from
// the state file with the saved XML, minus <backingStore/>. With a
// placeholder state the VM is left shut off (and defined from the XML if it
// no longer exists). The live images are kept as <image>.pre-restore until
// the VM is back, then removed.
func (h *Hypervisor) Restore(ctx context.Context, req RestoreRequest) (RestoreResult, error) {
	start := time.Now()
	unlock := h.lockDomain(req.Domain)
	defer unlock()
	res, err := h.restoreVM(ctx, req)
	res.Duration = time.Since(start)
	return res, err
}

func (h *Hypervisor) restoreVM(ctx context.Context, req RestoreRequest) (RestoreResult, error) {
	var res RestoreResult
	own, err := resolveOwnership(req.Ownership)
	if err != nil {
		return res, err
	}
	xb, err := os.ReadFile(req.XMLFile)
	if err != nil {
		return res, wrap(ErrMissingFile, err, "XML file")
	}
	x, err := stripBackingStore(string(xb))
	if err != nil {
		return res, wrap(ErrMissingFile, err, "XML file %s", req.XMLFile)
	}
	desc, err := parseDomainXML(x)
	if err != nil {
		return res, wrap(ErrMissingFile, err, "XML file %s", req.XMLFile)
	}
	var want []Disk
	for _, d := range req.Disks {
		want = append(want, Disk{Target: d.Target, Source: d.Source})
	}
	if err := sameDisks(want, desc.Disks); err != nil {
		return res, err
	}
	if _, err := os.Stat(req.StateFile); err != nil {
		return res, wrap(ErrMissingFile, err, "state file")
	}
	withState := isSaveImage(req.StateFile)

	// Check every disk before anything changes.
	moved := make([]bool, len(req.Disks))
	for i, d := range req.Disks {
		switch {
		case exists(d.Retained):
			if err := CheckImage(d.Retained); err != nil {
				return res, err
			}
			im, err := ImageInfo(d.Retained)
			if err != nil {
				return res, wrap(ErrCorruptImage, err, "%s", d.Retained)
			}
			if im.BackingFile != "" {
				return res, fmt.Errorf("%w: %s still needs %s", ErrMissingFile, d.Retained, im.BackingFile)
			}
			a, err1 := device(filepath.Dir(d.Source))
			b, err2 := device(d.Retained)
			if err := errors.Join(err1, err2); err != nil {
				return res, wrap(ErrMissingFile, err, "%s", d.Target)
			}
			if a != b {
				return res, fmt.Errorf("%w: %s is not on the filesystem of %s", ErrRenameImage, d.Retained, d.Source)
			}
		case exists(d.Source + preRestore):
			moved[i] = true // an earlier run got this far
		default:
			return res, wrap(ErrMissingFile, nil, "backed-up image %s", d.Retained)
		}
	}

	// The VM must be down while its disks are replaced.
	err = h.doRetry(ctx, func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(req.Domain)
		if errors.Is(err, lv.ERR_NO_DOMAIN) {
			return nil
		}
		if err != nil {
			return err
		}
		defer d.Free()
		if active, err := d.IsActive(); err != nil || !active {
			return err
		}
		return d.Destroy()
	})
	if err != nil {
		return res, wrap(ErrRestoreFailed, err, "stop %s", req.Domain)
	}

	for i, d := range req.Disks {
		if moved[i] {
			continue
		}
		if exists(d.Source) {
			if err := os.Rename(d.Source, d.Source+preRestore); err != nil {
				return res, wrap(ErrRenameImage, err, "%s", d.Source)
			}
		} else if err := os.WriteFile(d.Source+preRestore, nil, 0o600); err != nil {
			return res, wrap(ErrRenameImage, err, "%s", d.Source) // the marker
		}
		if err := os.Rename(d.Retained, d.Source); err != nil {
			return res, wrap(ErrRenameImage, err, "%s", d.Retained)
		}
		if err := own.apply(d.Source); err != nil {
			return res, err
		}
		_ = syncDir(filepath.Dir(d.Source))
	}

	if withState {
		if err := h.restore(ctx, req.Domain, req.StateFile, x); err != nil {
			return res, wrap(ErrRestoreFailed, err, "%s", req.Domain)
		}
		res.Running = true
	} else {
		err := h.do(func(c *lv.Connect) error {
			d, err := c.LookupDomainByName(req.Domain)
			if err == nil {
				d.Free()
				return nil
			}
			if !errors.Is(err, lv.ERR_NO_DOMAIN) {
				return err
			}
			d, err = c.DomainDefineXML(x)
			if err == nil {
				d.Free()
			}
			return err
		})
		if err != nil {
			return res, wrap(ErrRestoreFailed, err, "define %s", req.Domain)
		}
	}
	for _, d := range req.Disks {
		if err := os.Remove(d.Source + preRestore); err != nil && !os.IsNotExist(err) {
			return res, wrap(ErrMissingFile, err, "remove %s", d.Source+preRestore)
		}
	}
	return res, nil
}
