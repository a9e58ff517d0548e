package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
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
			chain, err := format.ImageChain(context.Background(), d.Source)
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
// overlays still read from. The intent records decide, never the files: an
// open snapshot record is settled by the adapter (which resumes the VM only
// when its record says it is saved and not yet restored), live disks are
// merged off the retained images, and only then, with no record of the leaf
// still open, is the directory removed. Never does it remove a file a live
// disk reads from.
func (a *Agent) tidy(ctx context.Context, vm ldapschema.VM, leaf ldapschema.Leaf) error {
	log := a.o.Log.WithFields(logrus.Fields{"vm": vm.Name, "leaf": leaf.DN})
	j, err := a.prepare(vm, leaf, log)
	if err != nil {
		return nil // no usable config: nothing of ours can be there
	}
	dir := j.layout.RetainPath()
	open, err := j.openRecords()
	if err != nil {
		return err
	}
	if slices.Contains(open, "restore") {
		r, _, err := libvirt.LoadRestoreRecord(j.record("restore"))
		switch {
		case err != nil:
			// Unreadable: it stays open, and everything is kept below.
		case r.Phase.Restored() && !r.Phase.Settled():
			// A restore past its point of no return whose cleanup failed
			// until its retries ran out: finish it (the restored VM runs).
			if _, err := a.restore(ctx, j); err != nil {
				return err
			}
			log.Info("the restore's cleanup is finished")
		case r.Phase == libvirt.RestorePuttingBack:
			// A restore that failed, and whose put-back failed too: its
			// step has answered, so the previous VM is put back here, as
			// a re-run of the step would after a crash. The adapter
			// answers the restore's failure again even when the put-back
			// is done; the record says whether it is.
			_, err := a.o.Hypervisor.Restore(ctx, a.restoreRequest(j, j.record("restore")))
			if settled, serr := j.restoreSettled(); serr != nil || !settled {
				return errors.Join(err, serr)
			}
			log.Info("the failed restore's previous VM is put back")
		}
		// A settled restore keeps its record only so that a re-run of its
		// step knows it is done; the leaf is finished, so it may go.
		settled, err := j.restoreSettled()
		if err != nil {
			return err
		}
		if settled {
			if err := j.record("restore").Remove(); err != nil {
				return err
			}
			open = slices.DeleteFunc(open, func(n string) bool { return n == "restore" })
		}
	}
	if !hostio.Exists(dir) && len(open) == 0 {
		return j.seam.RemoveAll(j.records) // the leaf's record directory: nothing open in it
	}
	log.WithFields(a.survey(vm)).WithField("dir", dir.String()).WithField("records", open).
		Warn("a finished leaf left files or intent records; settling them")

	if slices.Contains(open, "snapshot") {
		req := a.snapshotRequest(j)
		req.SettleOnly = true
		if _, err := a.o.Hypervisor.Snapshot(ctx, req); err != nil {
			return err
		}
		log.Info("the interrupted snapshot is settled")
		if open, err = j.openRecords(); err != nil {
			return err
		}
	}
	if !hostio.Exists(dir) {
		return nil
	}
	used, err := j.retainedInUse(dir.String())
	if err != nil {
		return err
	}
	if used {
		if _, err := a.o.Hypervisor.Merge(ctx, libvirt.MergeRequest{Domain: vm.Name, Disks: j.retained(), BandwidthMiBs: uint64(max(j.cfg.BandwidthMerge, 0))}); err != nil {
			return err
		}
		if used, err = j.retainedInUse(dir.String()); err != nil || used {
			log.Warn("retained images still back a live disk after the merge; kept")
			return err
		}
		log.Info("live disks merged off the retained images")
	}
	if len(open) > 0 {
		// A step's record is still open (e.g. a restore's put-back that
		// failed once more parks the VM's memory here): keep everything.
		log.WithField("records", open).Warn("intent records of the leaf are still open; the retain directory is kept")
		return nil
	}
	log.WithField("dir", dir.String()).Info("removing what a finished leaf left in the retain directory")
	if err := j.seam.RemoveAll(dir); err != nil {
		return err
	}
	return j.seam.RemoveAll(j.records)
}

// openRecords names the steps of the leaf whose intent record is open.
func (j *job) openRecords() ([]string, error) {
	ents, err := os.ReadDir(j.records.String())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && e.Type().IsRegular() {
			out = append(out, n)
		}
	}
	return out, nil
}

// retainedInUse says whether a live disk's backing chain reaches into dir.
func (j *job) retainedInUse(dir string) (bool, error) {
	for _, d := range j.disks {
		chain, err := format.ImageChain(context.Background(), d.Source)
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
