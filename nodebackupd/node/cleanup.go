package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// survey records what is true of a VM before anything is repaired: the
// domain's state and every disk's backing chain. It only reads.
func (a *Agent) survey(vm ldapschema.VM) logrus.Fields {
	f := logrus.Fields{}
	info, err := a.o.Hypervisor.Domain(vm.Name)
	switch {
	case err != nil:
		f["domain"] = err.Error()
	default:
		f["domain"] = info.State
		for _, d := range info.Disks {
			chain, err := libvirt.ImageChain(d.Source)
			if err != nil {
				f["disk "+d.Target] = err.Error()
				continue
			}
			var files []string
			for _, im := range chain {
				files = append(files, im.Filename)
			}
			f["disk "+d.Target] = strings.Join(files, " <- ")
		}
	}
	return f
}

// tidy settles what a finished leaf left on this host. After a crash, a
// deadline or a cancelled restore, its retain directory may hold unretained
// files, a saved state of a VM that was never resumed, or images the live
// overlays still read from. In that order of evidence: a VM saved but not
// restored is brought back (the snapshot is completed on the VM's side), live
// disks are merged off the retained images, and only then is the directory
// removed. Never does it remove a file a live disk reads from.
func (a *Agent) tidy(ctx context.Context, vm ldapschema.VM, leaf ldapschema.Leaf) error {
	log := a.o.Log.WithFields(logrus.Fields{"vm": vm.Name, "leaf": leaf.DN})
	j, err := a.prepare(vm, leaf, log)
	if err != nil {
		return nil // no usable config: nothing of ours can be there
	}
	dir := j.layout.RetainDir()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	log.WithFields(a.survey(vm)).WithField("dir", dir).Warn("a finished leaf left files in the retain directory; settling them")

	info, err := a.o.Hypervisor.Domain(vm.Name)
	if err != nil {
		return err // cannot tell: keep everything, try again later
	}
	if !info.Running && a.savedNotRestored(j) {
		// The snapshot stopped between save and restore: finish its VM part.
		if _, err := a.o.Hypervisor.Snapshot(ctx, a.snapshotRequest(j)); err != nil {
			return err
		}
		log.Info("VM saved by an interrupted snapshot is running again")
	}
	used, err := j.retainedInUse(dir)
	if err != nil {
		return err
	}
	if used {
		if _, err := a.o.Hypervisor.Merge(ctx, libvirt.MergeRequest{Domain: vm.Name, Disks: j.retained(), BandwidthMiBs: uint64(max(j.cfg.BandwidthMerge, 0))}); err != nil {
			return err
		}
		if used, err = j.retainedInUse(dir); err != nil || used {
			log.Warn("retained images still back a live disk after the merge; kept")
			return err
		}
		log.Info("live disks merged off the retained images")
	}
	log.WithField("dir", dir).Info("removing what a finished leaf left in the retain directory")
	return os.RemoveAll(dir)
}

// savedNotRestored: a real saved state (not the placeholder) waits in the
// retain directory or on the RAM disk.
func (a *Agent) savedNotRestored(j *job) bool {
	for _, p := range []string{
		filepath.Join(j.layout.RetainDir(), j.layout.StateName()),
		filepath.Join(j.cfg.RAMDisk, j.layout.StateName()),
	} {
		if j.cfg.RAMDisk == "" && !strings.HasPrefix(p, j.layout.RetainDir()) {
			continue
		}
		if libvirt.IsSaveImage(p) {
			return true
		}
	}
	return false
}

// retainedInUse says whether a live disk's backing chain reaches into dir.
func (j *job) retainedInUse(dir string) (bool, error) {
	for _, d := range j.disks {
		chain, err := libvirt.ImageChain(d.Source)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return false, err
		}
		for _, im := range chain {
			if inDir(im.Filename, dir) || inDir(im.BackingFile, dir) {
				return true, nil
			}
		}
	}
	return false, nil
}

func inDir(path, dir string) bool {
	if path == "" {
		return false
	}
	p := filepath.Clean(path)
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}
