package libvirt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lv "libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
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
	// ParkDir holds the current VM's saved state until the restored VM runs,
	// so that a failure can bring the current VM back exactly as it was. It
	// must be on a filesystem with room for the state; "" destroys instead.
	ParkDir string
	// WithoutState defines and starts the VM from the XML instead of resuming
	// the saved state (sstRestoreVMWithoutState).
	WithoutState bool
	// ForceStart starts the VM from the XML when resuming the state fails
	// (sstVirtualizationVirtualMachineForceStart).
	ForceStart bool
}

// RestoreResult reports how the VM came back.
type RestoreResult struct {
	Running   bool
	FromState bool // resumed from the saved state (not booted from the XML)
	Duration  time.Duration
	Downtime  time.Duration // from stopping the current VM until the restored one runs
}

// preRestore is the suffix of a live image kept aside until the restore
// has worked; it is also the proof, on a rerun, that a disk was moved.
const preRestore = ".pre-restore"

// parkedState is the current VM's state file in ParkDir.
func (r RestoreRequest) parkedState() string {
	if r.ParkDir == "" {
		return ""
	}
	return filepath.Join(r.ParkDir, r.Domain+".pre-restore.state")
}

// Restore stops the VM (saving its state to ParkDir, or destroying it),
// renames each backed-up image over its live one (the live one stays as
// <image>.pre-restore), defines the saved XML and resumes the saved state with
// it, minus <backingStore/>. With a placeholder state the VM is left shut off.
// On a failure after the point of no return the previous disks, definition and
// state are put back, so the VM runs as before, and the error is returned.
func (h *Hypervisor) Restore(ctx context.Context, req RestoreRequest) (RestoreResult, error) {
	start := time.Now()
	unlock := h.lockDomain(req.Domain)
	defer unlock()
	res, err := h.restoreVM(ctx, req)
	res.Duration = time.Since(start)
	return res, err
}

// previous is what a failed restore goes back to.
type previous struct {
	defined bool
	running bool
	xml     string // inactive definition
	saveXML string // live XML without backingStore, the parked state's XML
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
	if desc.Name != req.Domain {
		return res, fmt.Errorf("%w: saved XML names %q, not %q", ErrDiskMismatch, desc.Name, req.Domain)
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

	prev, err := h.stopForRestore(ctx, req)
	if err != nil {
		return res, err
	}
	stopped := time.Now()
	fail := func(err error) (RestoreResult, error) {
		if rerr := h.unrestore(ctx, req, prev); rerr != nil {
			return res, fmt.Errorf("%w; putting the previous VM back failed too: %v (its disks are kept as *%s)", err, rerr, preRestore)
		}
		return res, fmt.Errorf("%w (the previous VM was put back)", err)
	}

	for i, d := range req.Disks {
		if moved[i] {
			continue
		}
		if exists(d.Source) {
			if err := os.Rename(d.Source, d.Source+preRestore); err != nil {
				return fail(wrap(ErrRenameImage, err, "%s", d.Source))
			}
		} else if err := os.WriteFile(d.Source+preRestore, nil, 0o600); err != nil {
			return fail(wrap(ErrRenameImage, err, "%s", d.Source)) // the marker
		}
		if err := os.Rename(d.Retained, d.Source); err != nil {
			return fail(wrap(ErrRenameImage, err, "%s", d.Retained))
		}
		if err := own.apply(d.Source); err != nil {
			return fail(err)
		}
		_ = syncDir(filepath.Dir(d.Source))
	}

	// The saved definition becomes the persistent one (disks or memory may have
	// changed since the backup), then the VM resumes or boots from it.
	if err := h.define(x); err != nil {
		return fail(wrap(ErrRestoreFailed, err, "define %s", req.Domain))
	}
	if err := h.fail("restore-start"); err != nil {
		return fail(wrap(ErrRestoreFailed, err, "%s", req.Domain))
	}
	switch {
	case withState && !req.WithoutState:
		err := h.restore(ctx, req.Domain, req.StateFile, x)
		if err == nil {
			res.Running, res.FromState = true, true
			break
		}
		if !req.ForceStart {
			return fail(wrap(ErrRestoreFailed, err, "%s", req.Domain))
		}
		if serr := h.start(req.Domain); serr != nil {
			return fail(wrap(ErrRestoreFailed, errors.Join(err, serr), "%s", req.Domain))
		}
		res.Running = true
	case req.WithoutState:
		if err := h.start(req.Domain); err != nil {
			return fail(wrap(ErrRestoreFailed, err, "start %s", req.Domain))
		}
		res.Running = true
	}
	if res.Running {
		res.Downtime = time.Since(stopped)
	}
	for _, d := range req.Disks {
		if err := os.Remove(d.Source + preRestore); err != nil && !os.IsNotExist(err) {
			return res, wrap(ErrMissingFile, err, "remove %s", d.Source+preRestore)
		}
	}
	if p := req.parkedState(); p != "" {
		os.Remove(p)
	}
	return res, nil
}

// stopForRestore stops the current VM: its state is saved to ParkDir when it
// runs (so a failure can resume it), else it is destroyed.
func (h *Hypervisor) stopForRestore(ctx context.Context, req RestoreRequest) (previous, error) {
	var prev previous
	err := h.doRetry(ctx, func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(req.Domain)
		if errors.Is(err, lv.ERR_NO_DOMAIN) {
			return nil
		}
		if err != nil {
			return err
		}
		defer d.Free()
		prev.defined = true
		if prev.xml, err = d.GetXMLDesc(lv.DOMAIN_XML_INACTIVE | lv.DOMAIN_XML_SECURE); err != nil {
			return err
		}
		active, err := d.IsActive()
		if err != nil || !active {
			return err
		}
		prev.running = true
		if p := req.parkedState(); p != "" {
			live, err := d.GetXMLDesc(lv.DOMAIN_XML_SECURE | lv.DOMAIN_XML_MIGRATABLE)
			if err != nil {
				return err
			}
			if prev.saveXML, err = stripBackingStore(live); err != nil {
				return err
			}
			return d.SaveFlags(p, prev.saveXML, 0)
		}
		return d.Destroy()
	})
	if err != nil {
		return prev, wrap(ErrRestoreFailed, err, "stop %s", req.Domain)
	}
	return prev, nil
}

// unrestore puts the previous VM back after a failed restore: images back to
// the retain directory, the previous disks in place, the previous definition,
// and the previous state resumed (or the VM booted when no state was kept).
func (h *Hypervisor) unrestore(ctx context.Context, req RestoreRequest, prev previous) error {
	var errs []error
	_ = h.do(func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(req.Domain)
		if err != nil {
			return nil
		}
		defer d.Free()
		if active, _ := d.IsActive(); active {
			errs = append(errs, d.Destroy())
		}
		return nil
	})
	for _, d := range req.Disks {
		if !exists(d.Source + preRestore) {
			continue // never moved
		}
		if exists(d.Source) && !exists(d.Retained) {
			if err := os.Rename(d.Source, d.Retained); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if st, err := os.Stat(d.Source + preRestore); err == nil && st.Size() == 0 {
			errs = append(errs, os.Remove(d.Source+preRestore)) // only the marker: there was no disk
			continue
		}
		errs = append(errs, os.Rename(d.Source+preRestore, d.Source))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if prev.defined {
		if err := h.define(prev.xml); err != nil {
			return err
		}
	} else {
		_ = h.do(func(c *lv.Connect) error {
			d, err := c.LookupDomainByName(req.Domain)
			if err != nil {
				return nil
			}
			defer d.Free()
			return d.Undefine()
		})
	}
	if !prev.running {
		return nil
	}
	if p := req.parkedState(); p != "" && exists(p) {
		if err := h.restore(ctx, req.Domain, p, prev.saveXML); err != nil {
			return err
		}
		os.Remove(p)
		return nil
	}
	return h.start(req.Domain)
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

// Summary is what an operator compares before a restore.
type Summary struct {
	Name      string
	MemoryKiB uint64
	VCPUs     int
	Disks     []Disk // file-backed device='disk' disks
}

// SummarizeXML reads a domain XML's name, memory, vCPUs and disks.
func SummarizeXML(s string) (Summary, error) {
	d, err := parseDomainXML(s)
	if err != nil {
		return Summary{}, err
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(s); err != nil {
		return Summary{}, err
	}
	sum := Summary{Name: d.Name, MemoryKiB: d.MemoryKiB, Disks: d.Disks}
	if dom.VCPU != nil {
		sum.VCPUs = int(dom.VCPU.Value)
	}
	return sum, nil
}

// DomainXMLDisks lists the file-backed disks of a domain XML.
func DomainXMLDisks(s string) ([]Disk, error) {
	d, err := parseDomainXML(s)
	if err != nil {
		return nil, err
	}
	return d.Disks, nil
}

// IsSaveImage tells a real saved state from the placeholder of a shut-off VM.
func IsSaveImage(path string) bool { return isSaveImage(path) }
