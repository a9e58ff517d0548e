package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// job is everything one step needs, read fresh from the directory.
type job struct {
	vm      ldapschema.VM
	leaf    ldapschema.Leaf
	cfg     ldapschema.BackupConfig
	layout  format.Layout
	disks   []libvirt.Disk
	log     logrus.FieldLogger
	report  ldapschema.Report // what the step adds to its answer besides its times
	running fsm.Mode          // the -ing mode the step runs in
	seam    *hostio.Seam      // every host operation of the step passes it
	records hostio.Path       // this leaf's intent records, in the node's state directory
}

// record is the intent record of one step of this leaf (see hostio.Record):
// written before each operation it announces, read back by a re-run.
func (j *job) record(step string) hostio.Record {
	return hostio.Record{Path: j.records.MustJoin(step + ".json"), Seam: j.seam}
}

// prepare reads the effective backup config and the VM's disks.
func (a *Agent) prepare(vm ldapschema.VM, leaf ldapschema.Leaf, log logrus.FieldLogger) (*job, error) {
	get := func(dn string) (*ldap.Entry, error) {
		e, err := a.o.Store.Get(dn, "*")
		if errors.Is(err, ldapschema.ErrNotFound) {
			return nil, nil
		}
		return e, err
	}
	var entries [3]*ldap.Entry
	for i, dn := range []string{a.tree.VMBackup(vm.Name), a.tree.PoolBackup(vm.Pool), a.tree.GlobalBackup()} {
		if i == 1 && vm.Pool == "" {
			continue
		}
		e, err := get(dn)
		if err != nil {
			return nil, fail(ldapschema.RCCannotConnectBackend, err)
		}
		entries[i] = e
	}
	cfg, source, err := ldapschema.EffectiveConfig(entries[0], entries[1], entries[2])
	if err != nil {
		return nil, fail(ldapschema.RCNoConfig, err)
	}
	diskEntries, err := a.o.Store.Search(a.tree.VM(vm.Name), ldap.ScopeWholeSubtree,
		"(objectClass="+ldapschema.ClassDisk+")", []string{"*"})
	if err != nil {
		return nil, fail(ldapschema.RCCannotConnectBackend, err)
	}
	var disks []libvirt.Disk
	seen := map[string]bool{}
	storagePool := ""
	for _, de := range diskEntries {
		d, err := ldapschema.ParseDisk(a.tree, de)
		if err != nil {
			return nil, fail(ldapschema.RCBackendXMLInconsistent, err)
		}
		if !d.IsDisk() {
			continue // cdrom, floppy: not backed up
		}
		base, err := format.DiskFileName(d.SourceFile)
		if err != nil {
			return nil, fail(ldapschema.RCUnsupportedParameter, err)
		}
		if seen[base] {
			return nil, failf(ldapschema.RCBackendXMLInconsistent, "two disks share the file name %s", base)
		}
		seen[base] = true
		if storagePool == "" {
			// The backup tree repeats the images' storage pool directory, as the web UI expects.
			if storagePool, err = d.StoragePool(); err != nil {
				return nil, fail(ldapschema.RCUnsupportedParameter, err)
			}
		}
		disks = append(disks, libvirt.Disk{Target: d.Target, Source: d.SourceFile})
	}
	sort.Slice(disks, func(i, k int) bool { return disks[i].Target < disks[k].Target })
	if storagePool == "" {
		storagePool = vm.Pool
	}
	layout := format.Layout{
		RetainRoot: cfg.RetainDir, BackupRoot: cfg.RootDir,
		Kind: vm.StorageKind(), Pool: storagePool, VM: vm.Name, Leaf: leaf.Name,
	}
	if err := layout.Validate(); err != nil {
		return nil, fail(ldapschema.RCUnsupportedParameter, err)
	}
	for _, d := range disks {
		if err := layout.CheckDiskName(filepath.Base(d.Source)); err != nil {
			return nil, fail(ldapschema.RCUnsupportedParameter, err)
		}
	}
	log.WithField("config", source).Debug("effective backup config")
	records := hostio.In(a.o.StateDir).MustJoin("intent", vm.Name, leaf.Name)
	return &job{vm: vm, leaf: leaf, cfg: cfg, layout: layout, disks: disks, log: log,
		seam: a.o.Seam, records: records}, nil
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// isDirAt: p is a directory, reached without following a link below its root.
func isDirAt(p hostio.Path) bool {
	fi, err := hostio.Lstat(p)
	return err == nil && fi.IsDir()
}

// beneathRoots holds dir with the configured root (retain or backup) it lies in.
func (j *job) beneathRoots(dir string) (hostio.Path, error) {
	for _, root := range []string{j.layout.RetainRoot, j.layout.BackupRoot} {
		if p, err := hostio.Beneath(root, dir); err == nil {
			return p, nil
		}
	}
	return hostio.Path{}, fmt.Errorf("%s is outside the configured roots", dir)
}

// mkdirOwned creates dir (and parents below its root) with the configured
// directory owner, group and permission.
func (j *job) mkdirOwned(dir string) error {
	p, err := j.beneathRoots(dir)
	if err != nil {
		return fail(ldapschema.RCCannotCreateDirectory, err)
	}
	return j.mkdirOwnedAt(p)
}

// mkdirOwnedAt is mkdirOwned beneath a root: a link on the way is never
// followed, and each directory it creates gets the configured owner and mode.
func (j *job) mkdirOwnedAt(p hostio.Path) error {
	perm := j.cfg.DirPermission
	if perm == 0 {
		perm = 0o770
	}
	uid, gid, err := format.LookupOwner(j.cfg.DirOwner, j.cfg.DirGroup)
	if err != nil {
		return fail(ldapschema.RCCannotChownDirectory, err)
	}
	created, err := j.seam.MkdirAll(p, perm)
	if err != nil {
		return fail(ldapschema.RCCannotCreateDirectory, err)
	}
	if len(created) == 0 || created[len(created)-1] != p {
		created = append(created, p)
	}
	for _, d := range created {
		if err := j.seam.Chown(d, uid, gid); err != nil {
			return fail(ldapschema.RCCannotChownDirectory, err)
		}
		if err := j.seam.Chmod(d, perm); err != nil {
			return fail(ldapschema.RCCannotChmodDirectory, err)
		}
	}
	return nil
}

// privateMode is the mode of the backup's XML and LDIF files: the configured
// mode without world bits (the state file, the guest's RAM, is 0600).
func (j *job) privateMode() os.FileMode {
	if j.cfg.Permission == 0 {
		return 0o600
	}
	return j.cfg.Permission.Perm() &^ 0o007
}

// checkRoots refuses to start when the configured locations are not there.
func (j *job) checkRoots() error {
	if !isDir(j.cfg.RootDir) {
		return failf(ldapschema.RCBackupRootMissing, "backup root %s does not exist", j.cfg.RootDir)
	}
	if !isDir(j.cfg.RetainDir) {
		return failf(ldapschema.RCRetainRootMissing, "retain root %s does not exist", j.cfg.RetainDir)
	}
	return nil
}

// snapshot: the seed's Snapshot sub-process. The VM's subtree goes to <vm>.ldif;
// the adapter saves the state, swaps the disks for overlays, dumps the XML and
// restores the VM, or rolls everything back, following its intent record.
func (a *Agent) snapshot(ctx context.Context, j *job) ([]string, error) {
	if err := j.checkRoots(); err != nil {
		return nil, err
	}
	ramDisk := j.cfg.RAMDisk
	if ramDisk != "" && !isDir(ramDisk) {
		return nil, failf(ldapschema.RCRAMDiskInvalid, "RAM disk %s is not a directory", ramDisk)
	}
	// Refuse before anything is created when the VM is unknown to the hypervisor.
	if _, err := a.o.Hypervisor.Domain(j.vm.Name); err != nil {
		return nil, err
	}
	dir := j.layout.RetainPath()
	if err := j.mkdirOwnedAt(dir); err != nil {
		return nil, err
	}
	ldifPath := dir.MustJoin(j.layout.LDIFName())
	cleanup := func() {
		_ = j.seam.Remove(ldifPath)
		_ = j.seam.Remove(dir) // only if empty: never remove a retained image here
	}
	ldif, err := a.subtreeLDIF(j.vm.Name)
	if err != nil {
		cleanup()
		return nil, fail(ldapschema.RCCannotSaveBackendEntry, err)
	}
	if err := j.seam.WriteFile(ldifPath, []byte(ldif), j.privateMode()); err != nil {
		cleanup()
		return nil, fail(ldapschema.RCCannotSaveBackendEntry, err)
	}
	res, err := a.o.Hypervisor.Snapshot(ctx, a.snapshotRequest(j))
	if err != nil {
		cleanup()
		return nil, err
	}
	j.log.WithFields(logrus.Fields{"downtime": res.Downtime.Seconds(), "running": res.WasRunning,
		"live": res.Live, "bounded": res.Bounded}).Info("snapshot taken")
	times := []string{"snapshot: " + seconds(res.Total), "downtime: " + seconds(res.Downtime)}
	if res.WasRunning {
		times = append(times, "snapshotMode: "+snapshotModeRan(res))
	}
	return times, nil
}

// snapshotModeRan is how the memory was saved, for the leaf's execution
// times: live, live-bounded (the bound paused the guest to finish) or save.
func snapshotModeRan(res libvirt.SnapshotResult) string {
	switch {
	case res.Bounded:
		return string(SnapshotLive) + "-bounded"
	case res.Live:
		return string(SnapshotLive)
	}
	return string(SnapshotSave)
}

func (a *Agent) snapshotRequest(j *job) libvirt.SnapshotRequest {
	req := libvirt.SnapshotRequest{
		Domain:    j.vm.Name,
		Disks:     j.disks,
		RetainDir: j.layout.RetainPath(),
		StateName: j.layout.StateName(),
		XMLName:   j.layout.XMLName(),
		Ownership: libvirt.Ownership{Owner: j.cfg.Owner, Group: j.cfg.Group, Perm: j.cfg.Permission},
		Record:    j.record("snapshot"),
		Live:      a.o.Snapshot != SnapshotSave,
		Bound:     a.o.LiveBound,
	}
	if j.cfg.RAMDisk != "" {
		req.RAMDisk = hostio.In(j.cfg.RAMDisk)
	}
	return req
}

// subtreeLDIF is the VM's entry and its children, without the backup leaves.
func (a *Agent) subtreeLDIF(vm string) (string, error) {
	entries, err := a.o.Store.SubtreeEntries(a.tree.VM(vm))
	if err != nil {
		return "", err
	}
	var keep []*ldap.Entry
	for _, e := range entries {
		if isLeaf(e) {
			continue
		}
		keep = append(keep, e)
	}
	return ldapschema.FormatLDIF(keep), nil
}

func (j *job) retained() []libvirt.RetainedDisk {
	out := make([]libvirt.RetainedDisk, 0, len(j.disks))
	for _, d := range j.disks {
		out = append(out, libvirt.RetainedDisk{
			Target: d.Target, Source: d.Source,
			Retained: j.layout.RetainedDisk(d.Source),
		})
	}
	return out
}

// retain: copy every retained file into the backup directory with the leaf's
// suffix, check each copy, and only then remove the retained files. In
// chunks storage the disks and the state go to the backup root's chunk
// store instead, and the backup directory gets their indexes.
func (a *Agent) retain(ctx context.Context, j *job) ([]string, error) {
	start := time.Now()
	if err := j.checkRoots(); err != nil {
		return nil, err
	}
	src, dst := j.layout.RetainPath(), j.layout.BackupPath()
	type file struct {
		name  string
		code  ldapschema.ReturnCode
		image bool
		perm  os.FileMode
	}
	files := []file{
		{j.layout.StateName(), ldapschema.RCCannotCopyToBackup, false, 0o600}, // the guest's RAM
		{j.layout.XMLName(), ldapschema.RCCannotCopyXML, false, j.privateMode()},
		{j.layout.LDIFName(), ldapschema.RCCannotCopyBackendFile, false, j.privateMode()},
	}
	for _, d := range j.retained() {
		// Never move an image a live disk still reads from.
		info, err := format.ImageInfo(ctx, d.Source)
		if err != nil {
			return nil, fail(ldapschema.RCCannotCopyImage, err)
		}
		if info.BackingFile != "" && filepath.Clean(info.BackingFile) == filepath.Clean(d.Retained) {
			return nil, failf(ldapschema.RCCannotRemoveOldImage, "%s still depends on %s: not merged", d.Source, d.Retained)
		}
		files = append(files, file{filepath.Base(d.Retained), ldapschema.RCCannotCopyImage, true, j.cfg.Permission})
	}
	chunked := a.o.Storage == format.StorageChunks
	// kept is what an iteration holds of f: its copy, or in chunks storage
	// the index of a disk or of the state.
	state := func(f file) bool { return f.name == j.layout.StateName() }
	kept := func(f file) hostio.Path {
		if chunked && (f.image || state(f)) {
			return j.layout.BackupIndex(f.name)
		}
		return dst.MustJoin(j.layout.BackupName(f.name))
	}
	if !isDirAt(src) && isDirAt(dst) {
		// A run that removed the retain directory already finished; check it did all.
		for _, f := range files {
			if !hostio.IsRegular(kept(f)) {
				return nil, failf(ldapschema.RCMissingFiles, "retain directory gone and %s missing", f.name)
			}
		}
		return []string{"retain: " + seconds(time.Since(start))}, nil
	}
	if err := j.mkdirOwnedAt(dst); err != nil {
		return nil, err
	}
	uid, gid, err := format.LookupOwner(j.cfg.Owner, j.cfg.Group)
	if err != nil {
		return nil, fail(ldapschema.RCCannotChownImage, err)
	}
	var total int64
	var srcs []hostio.Path
	for _, f := range files {
		srcs = append(srcs, src.MustJoin(f.name))
	}
	m := a.newMeter(j, "retain", srcs)
	var chunks chunkTotals
	for _, f := range files {
		fromP, toP := src.MustJoin(f.name), kept(f)
		if !hostio.Exists(fromP) {
			if hostio.IsRegular(toP) {
				continue // copied and removed by an earlier run
			}
			return nil, failf(ldapschema.RCMissingFiles, "%s is missing", fromP)
		}
		if f.image && chunked {
			prog, finished := m.file()
			n, how, err := j.storeDisk(ctx, fromP, toP, f.perm, &chunks, prog)
			if err != nil {
				return nil, err
			}
			finished(n)
			chunks.how = append(chunks.how, fmt.Sprintf("retainRead %s: %s", f.name, how))
			if err := j.seam.Chown(toP, uid, gid); err != nil {
				return nil, fail(ldapschema.RCCannotChownImage, err)
			}
			continue
		}
		if chunked && state(f) {
			if err := j.storeState(ctx, fromP, toP, f.perm, &chunks); err != nil {
				return nil, err
			}
			continue
		}
		same, err := SameFile(fromP, toP)
		if err != nil {
			return nil, fail(f.code, err)
		}
		if !same {
			prog, finished := m.file()
			n, err := CopyFile(ctx, j.seam, fromP, toP, f.perm, prog)
			if err != nil {
				return nil, fail(f.code, err)
			}
			finished(n)
			total += n
		}
		if f.image {
			if err := j.seam.Chown(toP, uid, gid); err != nil {
				return nil, fail(ldapschema.RCCannotChownImage, err)
			}
		}
	}
	// Every copy is complete and checked: now the retained files may go.
	var left []string
	for _, f := range files {
		if err := j.seam.Remove(src.MustJoin(f.name)); err != nil {
			left = append(left, f.name)
		}
	}
	if err := j.seam.Remove(src); err != nil {
		left = append(left, src.String())
	}
	if len(left) > 0 {
		return nil, failf(ldapschema.RCRetainNotEmpty, "left in retain: %s", strings.Join(left, ", "))
	}
	total += chunks.Bytes
	j.log.WithField("bytes", total).Info("retained")
	times := []string{"retain: " + seconds(time.Since(start)), fmt.Sprintf("retainBytes: %d", total)}
	if chunked {
		times = append(times, chunks.times()...)
	}
	return times, nil
}

// delete: remove this iteration's files from the backup location, beneath
// the backup root (a planted link is removed, never followed).
func (a *Agent) delete(ctx context.Context, j *job) ([]string, error) {
	start := time.Now()
	if err := j.seam.RemoveAll(j.layout.BackupPath()); err != nil {
		return nil, fail(ldapschema.RCCannotRemoveFile, err)
	}
	// The iteration is gone: so are its intent records.
	if err := j.seam.RemoveAll(j.records); err != nil {
		return nil, fail(ldapschema.RCCannotRemoveFile, err)
	}
	return []string{"delete: " + seconds(time.Since(start))}, nil
}
