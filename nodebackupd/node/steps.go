package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// job is everything one step needs, read fresh from the directory.
type job struct {
	vm      ldapschema.VM
	leaf    ldapschema.Leaf
	cfg     ldapschema.BackupConfig
	layout  Layout
	disks   []libvirt.Disk
	log     logrus.FieldLogger
	extra   map[string][]string // further leaf attributes the step reports
	running string              // the -ing mode the step runs in
	seam    *hostio.Seam        // every host operation of the step passes it
	records hostio.Path         // this leaf's intent records, in the node's state directory
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
		base, err := DiskFileName(d.SourceFile)
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
	layout := Layout{
		RetainRoot: cfg.RetainDir, BackupRoot: cfg.RootDir,
		Kind: vm.StorageKind(), Pool: storagePool, VM: vm.Name, Leaf: leaf.Name,
	}
	if err := layout.Validate(); err != nil {
		return nil, fail(ldapschema.RCUnsupportedParameter, err)
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

// mkdirOwned creates dir (and parents below root) with the configured directory
// owner, group and permission.
func (j *job) mkdirOwned(dir string) error {
	perm := j.cfg.DirPermission
	if perm == 0 {
		perm = 0o770
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return fail(ldapschema.RCCannotCreateDirectory, err)
	}
	if err := chown(dir, j.cfg.DirOwner, j.cfg.DirGroup); err != nil {
		return fail(ldapschema.RCCannotChownDirectory, err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		return fail(ldapschema.RCCannotChmodDirectory, err)
	}
	return nil
}

// chown sets owner and group by name ("" leaves that part).
func chown(path, owner, group string) error {
	uid, gid := -1, -1
	if owner != "" {
		u, err := user.Lookup(owner)
		if err != nil {
			return err
		}
		uid, _ = strconv.Atoi(u.Uid)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return err
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return os.Chown(path, uid, gid)
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
// restores the VM, or rolls everything back.
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
	dir := j.layout.RetainDir()
	if err := j.mkdirOwned(dir); err != nil {
		return nil, err
	}
	cleanup := func() {
		os.Remove(filepath.Join(dir, j.layout.LDIFName()))
		os.Remove(dir) // only if empty: never remove a retained image here
	}
	ldif, err := a.subtreeLDIF(j.vm.Name)
	if err != nil {
		cleanup()
		return nil, fail(ldapschema.RCCannotSaveBackendEntry, err)
	}
	if err := writeFileSync(filepath.Join(dir, j.layout.LDIFName()), []byte(ldif), 0o600); err != nil {
		cleanup()
		return nil, fail(ldapschema.RCCannotSaveBackendEntry, err)
	}
	res, err := a.o.Hypervisor.Snapshot(ctx, a.snapshotRequest(j))
	if err != nil {
		cleanup()
		return nil, err
	}
	j.log.WithFields(logrus.Fields{"downtime": res.Downtime.Seconds(), "running": res.WasRunning}).Info("snapshot taken")
	return []string{"snapshot: " + seconds(res.Total), "downtime: " + seconds(res.Downtime)}, nil
}

func (a *Agent) snapshotRequest(j *job) libvirt.SnapshotRequest {
	return libvirt.SnapshotRequest{
		Domain:    j.vm.Name,
		Disks:     j.disks,
		RAMDisk:   j.cfg.RAMDisk,
		RetainDir: j.layout.RetainDir(),
		StateName: j.layout.StateName(),
		XMLName:   j.layout.XMLName(),
		Ownership: libvirt.Ownership{Owner: j.cfg.Owner, Group: j.cfg.Group, Perm: j.cfg.Permission},
	}
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
			Retained: filepath.Join(j.layout.RetainDir(), filepath.Base(d.Source)),
		})
	}
	return out
}

// retain: copy every retained file into the backup directory with the leaf's
// suffix, check each copy, and only then remove the retained files.
func (a *Agent) retain(ctx context.Context, j *job) ([]string, error) {
	start := time.Now()
	if err := j.checkRoots(); err != nil {
		return nil, err
	}
	src, dst := j.layout.RetainDir(), j.layout.BackupDir()
	type file struct {
		name  string
		code  ldapschema.ReturnCode
		image bool
	}
	files := []file{
		{j.layout.StateName(), ldapschema.RCCannotCopyToBackup, false},
		{j.layout.XMLName(), ldapschema.RCCannotCopyXML, false},
		{j.layout.LDIFName(), ldapschema.RCCannotCopyBackendFile, false},
	}
	for _, d := range j.retained() {
		// Never move an image a live disk still reads from.
		info, err := libvirt.ImageInfo(d.Source)
		if err != nil {
			return nil, fail(ldapschema.RCCannotCopyImage, err)
		}
		if info.BackingFile != "" && filepath.Clean(info.BackingFile) == filepath.Clean(d.Retained) {
			return nil, failf(ldapschema.RCCannotRemoveOldImage, "%s still depends on %s: not merged", d.Source, d.Retained)
		}
		files = append(files, file{filepath.Base(d.Retained), ldapschema.RCCannotCopyImage, true})
	}
	if !isDir(src) && isDir(dst) {
		// A run that removed the retain directory already finished; check it did all.
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(dst, j.layout.BackupName(f.name))); err != nil {
				return nil, failf(ldapschema.RCMissingFiles, "retain directory gone and %s missing", f.name)
			}
		}
		return []string{"retain: " + seconds(time.Since(start))}, nil
	}
	if err := j.mkdirOwned(dst); err != nil {
		return nil, err
	}
	var total int64
	var srcs []string
	for _, f := range files {
		srcs = append(srcs, filepath.Join(src, f.name))
	}
	m := a.newMeter(j, "retain", srcs)
	for _, f := range files {
		from, to := filepath.Join(src, f.name), filepath.Join(dst, j.layout.BackupName(f.name))
		fromP, toP := j.layout.RetainPath().MustJoin(f.name), j.layout.BackupPath().MustJoin(j.layout.BackupName(f.name))
		if _, err := os.Stat(from); err != nil {
			if _, derr := os.Stat(to); derr == nil {
				continue // copied and removed by an earlier run
			}
			return nil, failf(ldapschema.RCMissingFiles, "%s: %v", from, err)
		}
		same, err := SameFile(fromP, toP)
		if err != nil {
			return nil, fail(f.code, err)
		}
		if !same {
			prog, finished := m.file()
			n, err := CopyFile(ctx, j.seam, fromP, toP, j.cfg.Permission, prog)
			if err != nil {
				return nil, fail(f.code, err)
			}
			finished(n)
			total += n
		}
		if f.image {
			if err := chown(to, j.cfg.Owner, j.cfg.Group); err != nil {
				return nil, fail(ldapschema.RCCannotChownImage, err)
			}
		}
	}
	// Every copy is complete and checked: now the retained files may go.
	var left []string
	for _, f := range files {
		if err := os.Remove(filepath.Join(src, f.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			left = append(left, f.name)
		}
	}
	if err := os.Remove(src); err != nil && !errors.Is(err, os.ErrNotExist) {
		left = append(left, src)
	}
	if len(left) > 0 {
		return nil, failf(ldapschema.RCRetainNotEmpty, "left in retain: %s", strings.Join(left, ", "))
	}
	j.log.WithField("bytes", total).Info("retained")
	return []string{"retain: " + seconds(time.Since(start)), fmt.Sprintf("retainBytes: %d", total)}, nil
}

// delete: remove this iteration's files from the backup location.
func (a *Agent) delete(ctx context.Context, j *job) ([]string, error) {
	start := time.Now()
	if err := os.RemoveAll(j.layout.BackupDir()); err != nil {
		return nil, fail(ldapschema.RCCannotRemoveFile, err)
	}
	return []string{"delete: " + seconds(time.Since(start))}, nil
}

func writeFileSync(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
