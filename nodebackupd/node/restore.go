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

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// The restore keeps the backup's names (with the .<leaf> suffix) in the retain
// directory: the web UI looks for <retain>/<kind>/<pool>/<vm>/<leaf>/<vm>.ldif.<leaf>
// after unretainSmallFiles, and copies it to <vm>.ldif when the operator goes on.

// otherActive refuses a restore step while another leaf of the VM is busy, or
// when the backup is known to have failed: fsm.RestoreMayStart, the rule every
// writer uses. A leaf that cannot be parsed counts as busy.
func (a *Agent) otherActive(j *job) error {
	var others []fsm.Leaf
	var unknown []string
	prefix := ldapschema.NormalizeDN(a.tree.VMBackup(j.vm.Name))
	a.cache.Each(func(e *ldap.Entry) {
		if !isLeaf(e) || !strings.HasSuffix(ldapschema.NormalizeDN(e.DN), ","+prefix) {
			return
		}
		l, err := ldapschema.ParseLeaf(a.tree, e)
		if err != nil {
			if fsm.BusyValue(e.GetAttributeValue(ldapschema.AttrMode)) {
				unknown = append(unknown, e.DN)
			}
			return
		}
		others = append(others, l.FSM(j.vm.Node))
	})
	if len(unknown) > 0 {
		return failf(ldapschema.RCCannotLockMachine, "leaves of %s in no known mode: %s", j.vm.Name, strings.Join(unknown, ", "))
	}
	if err := fsm.RestoreMayStart(j.leaf.FSM(j.vm.Node), others); err != nil {
		return fail(ldapschema.RCCannotLockMachine, err)
	}
	return nil
}

// unretain copies files from the backup directory into the retain directory,
// keeping their suffixed names, and returns the copied paths.
func (a *Agent) unretain(ctx context.Context, j *job, names []string, code ldapschema.ReturnCode) ([]string, int64, error) {
	if err := j.checkRoots(); err != nil {
		return nil, 0, err
	}
	dst := j.layout.RetainDir()
	// A disk stored in chunks has its index instead of its copy: each
	// iteration is read as it was stored, whatever the storage is now.
	chunked := func(n string) bool { return hostio.IsRegular(j.layout.BackupIndex(n)) }
	for _, n := range names {
		if chunked(n) {
			continue
		}
		if _, err := hostio.Lstat(j.layout.BackupPath().MustJoin(j.layout.BackupName(n))); err != nil {
			return nil, 0, failf(ldapschema.RCMissingFiles, "backup file missing: %v", err)
		}
	}
	if err := j.mkdirOwned(dst); err != nil {
		return nil, 0, err
	}
	var out []string
	var total int64
	var srcs []hostio.Path
	for _, n := range names {
		srcs = append(srcs, j.layout.BackupPath().MustJoin(j.layout.BackupName(n)))
	}
	m := a.newMeter(j, "unretain", srcs)
	for _, n := range names {
		to := filepath.Join(dst, j.layout.BackupName(n))
		fromP, toP := j.layout.BackupPath().MustJoin(j.layout.BackupName(n)), j.layout.RetainPath().MustJoin(j.layout.BackupName(n))
		if chunked(n) {
			rebuild := j.rebuildDisk
			if n == j.layout.StateName() {
				rebuild = j.rebuildState
			}
			c, err := rebuild(ctx, j.layout.BackupIndex(n), toP, j.cfg.Permission)
			if err != nil {
				return nil, 0, err
			}
			total += c
			out = append(out, to)
			continue
		}
		same, err := SameFile(fromP, toP)
		if err != nil {
			return nil, 0, fail(code, err)
		}
		if !same {
			prog, finished := m.file()
			c, err := CopyFile(ctx, j.seam, fromP, toP, j.cfg.Permission, prog)
			if err != nil {
				return nil, 0, fail(code, err)
			}
			finished(c)
			total += c
		}
		out = append(out, to)
	}
	return out, total, nil
}

// unretainSmallFiles: the saved XML and LDIF go to the retain directory, and
// what differs between them and today's VM is published on the leaf (and in
// <vm>.diff.<leaf> beside them) for the operator to decide on.
func (a *Agent) unretainSmallFiles(ctx context.Context, j *job) ([]string, error) {
	start := time.Now()
	if err := a.otherActive(j); err != nil {
		return nil, err
	}
	if err := a.newRestore(j); err != nil {
		return nil, err
	}
	paths, _, err := a.unretain(ctx, j, []string{j.layout.XMLName(), j.layout.LDIFName()}, ldapschema.RCCannotCopyToBackup)
	if err != nil {
		return nil, err
	}
	retain := j.layout.RetainPath()
	savedXML, err := hostio.ReadFile(retain.MustJoin(filepath.Base(paths[0])))
	if err != nil {
		return nil, fail(ldapschema.RCCannotReadXML, err)
	}
	savedLDIF, err := hostio.ReadFile(retain.MustJoin(filepath.Base(paths[1])))
	if err != nil {
		return nil, fail(ldapschema.RCCannotReadXML, err)
	}
	diff, err := a.restoreDiff(j, string(savedXML), string(savedLDIF))
	if err != nil {
		return nil, err
	}
	body := strings.Join(diff, "\n") + "\n"
	if len(diff) == 0 {
		body = "no differences\n"
	}
	if err := j.seam.WriteFile(retain.MustJoin(j.layout.BackupName(j.vm.Name+".diff")), []byte(body), 0o640); err != nil {
		return nil, fail(ldapschema.RCCannotCopyToBackup, err)
	}
	j.report = ldapschema.Report{SetDescription: true, Description: ldapschema.FormatRestoreDiff(diff)}
	return []string{"unretainSmallFiles: " + seconds(time.Since(start))}, nil
}

// unretainLargeFiles: the state file and every disk image come back to the
// retain directory and are checked.
func (a *Agent) unretainLargeFiles(ctx context.Context, j *job) ([]string, error) {
	start := time.Now()
	if err := a.otherActive(j); err != nil {
		return nil, err
	}
	disks, err := a.savedDisks(j)
	if err != nil {
		return nil, err
	}
	names := []string{j.layout.StateName()}
	for _, d := range disks {
		names = append(names, filepath.Base(d.Source))
	}
	paths, total, err := a.unretain(ctx, j, names, ldapschema.RCCannotCopyStateToRetain)
	if err != nil {
		return nil, err
	}
	for _, p := range paths[1:] {
		if err := format.CheckImage(ctx, p, ""); err != nil {
			return nil, fail(ldapschema.RCCorruptImage, err)
		}
		// The restored disk starts a history of its own: a bitmap of the
		// backed-up one would pair it with an index it no longer matches.
		if err := format.RemoveBitmaps(ctx, j.seam, p); err != nil {
			return nil, fail(ldapschema.RCCannotCopyStateToRetain, err)
		}
	}
	return []string{"unretainLargeFiles: " + seconds(time.Since(start)), fmt.Sprintf("unretainBytes: %d", total)}, nil
}

// savedDisks reads the disks of the XML saved with the backup.
func (a *Agent) savedDisks(j *job) ([]libvirt.Disk, error) {
	x, err := a.savedXML(j)
	if err != nil {
		return nil, err
	}
	dom, err := format.ParseDomainXML(x)
	if err != nil {
		return nil, fail(ldapschema.RCCannotReadXML, err)
	}
	disks := dom.Disks
	for _, d := range disks {
		if _, err := format.DiskFileName(d.Source); err != nil {
			return nil, fail(ldapschema.RCUnsupportedParameter, err)
		}
	}
	return disks, nil
}

func (a *Agent) savedXML(j *job) (string, error) {
	p := j.layout.RetainPath().MustJoin(j.layout.BackupName(j.layout.XMLName()))
	b, err := hostio.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", failf(ldapschema.RCMissingFiles, "%s: run unretainSmallFiles first", p)
		}
		return "", fail(ldapschema.RCCannotReadXML, err)
	}
	return string(b), nil
}

// savedLDIF prefers <vm>.ldif, which the web UI writes (possibly resolved by
// the operator) before going on, over the unretained <vm>.ldif.<leaf>.
func (a *Agent) savedLDIF(j *job) ([]*ldap.Entry, error) {
	dir := j.layout.RetainPath()
	p := dir.MustJoin(j.layout.LDIFName())
	b, err := hostio.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		p = dir.MustJoin(j.layout.BackupName(j.layout.LDIFName()))
		b, err = hostio.ReadFile(p)
	}
	if err != nil {
		return nil, failf(ldapschema.RCMissingFiles, "saved LDIF: %v", err)
	}
	entries, err := ldapschema.ParseLDIF(string(b))
	if err != nil {
		return nil, fail(ldapschema.RCCannotSaveBackendEntry, fmt.Errorf("%s: %w", p, err))
	}
	return entries, nil
}

// restore: the point of no return. The adapter parks the current VM (its state
// and disks stay until the restored VM runs), puts the backed-up disks in place
// and resumes the saved state with the saved XML; then the saved directory
// entries are written back and the retain directory goes. All of it is driven
// by the step's intent record: a re-run after the restore took effect only
// finishes the write-back and the removal, and succeeds.
func (a *Agent) restore(ctx context.Context, j *job) ([]string, error) {
	start := time.Now()
	rec := j.record("restore")
	r, found, err := libvirt.LoadRestoreRecord(rec)
	if err != nil {
		return nil, fail(ldapschema.RCWrongState, err)
	}
	if !found || !r.Phase.Restored() {
		if err := a.otherActive(j); err != nil {
			return nil, err
		}
	}
	if !r.Phase.Restored() || r.Phase == libvirt.RestoreResumed {
		_, err := a.o.Hypervisor.Restore(ctx, a.restoreRequest(j, rec))
		if err != nil {
			if now, _, lerr := libvirt.LoadRestoreRecord(rec); lerr == nil && now.Phase.Restored() {
				return nil, finishLater(err) // the restored VM runs: only its cleanup failed
			}
			return nil, err
		}
		if r, _, err = libvirt.LoadRestoreRecord(rec); err != nil {
			return nil, finishLater(fail(ldapschema.RCWrongState, err))
		}
		j.log.WithField("running", r.Running).WithField("fromState", r.FromState).Info("VM restored")
	}
	if r.Phase == libvirt.RestoreCleaned {
		entries, err := a.savedLDIF(j)
		if err != nil {
			return nil, finishLater(err)
		}
		if err := a.writeBack(j, entries); err != nil {
			return nil, finishLater(fail(ldapschema.RCCannotSaveBackendEntry, err))
		}
		if err := r.Mark(rec, libvirt.RestoreWrittenBack); err != nil {
			return nil, finishLater(fail(ldapschema.RCCannotSaveBackendEntry, err))
		}
	}
	if r.Phase == libvirt.RestoreWrittenBack {
		// The restored VM runs and the directory says so: the retain copy may go.
		if err := j.seam.RemoveAll(j.layout.RetainPath()); err != nil {
			return nil, finishLater(fail(ldapschema.RCRetainNotEmpty, err))
		}
		if err := r.Mark(rec, libvirt.RestoreDone); err != nil {
			return nil, finishLater(fail(ldapschema.RCRetainNotEmpty, err))
		}
	}
	j.report = ldapschema.Report{SetDescription: true} // the differences are history now
	return []string{"restore: " + seconds(time.Since(start)), "restoreDowntime: " + seconds(r.Downtime)}, nil
}

// errFinishLater marks a failure after a restore's point of no return: the
// restored VM runs, only the cleanup or the directory write-back is left, and
// the step is resumed (from its record) instead of answered, as after a lost
// connection; tidy finishes it should the retries run out.
var errFinishLater = errors.New("the restore took effect; finishing it later")

func finishLater(err error) error { return fmt.Errorf("%w: %w", errFinishLater, err) }

// restoreRequest: the directory's disks (the saved XML must name exactly
// these), the backup's files beneath the retain root, each live image beneath
// its storage directory, the previous VM's state parked in the retain directory.
func (a *Agent) restoreRequest(j *job, rec hostio.Record) libvirt.RestoreRequest {
	retain := j.layout.RetainPath()
	var disks []libvirt.RestoreDisk
	for _, d := range j.disks {
		base := filepath.Base(d.Source) // checked by DiskFileName in prepare
		disks = append(disks, libvirt.RestoreDisk{Target: d.Target,
			Live:   hostio.In(filepath.Dir(d.Source)).MustJoin(base),
			Backup: retain.MustJoin(j.layout.BackupName(base))})
	}
	return libvirt.RestoreRequest{
		Domain:       j.vm.Name,
		Disks:        disks,
		XMLFile:      retain.MustJoin(j.layout.BackupName(j.layout.XMLName())),
		StateFile:    retain.MustJoin(j.layout.BackupName(j.layout.StateName())),
		ParkDir:      retain,
		WithoutState: j.cfg.RestoreWithoutState,
		ForceStart:   j.cfg.ForceStart,
		Ownership:    libvirt.Ownership{Owner: j.cfg.Owner, Group: j.cfg.Group, Perm: j.cfg.Permission},
		Record:       rec,
	}
}

// restoreSettled: no restore of this leaf is open on the host — none ran,
// or the last one took effect or put the previous VM back. While one is open
// its retain directory holds what the record names (parked state, images).
func (j *job) restoreSettled() (bool, error) {
	r, found, err := libvirt.LoadRestoreRecord(j.record("restore"))
	if err != nil {
		return false, err
	}
	return !found || r.Phase.Settled(), nil
}

// newRestore closes the record of an earlier, settled restore of this leaf,
// so that a new one starts from its own checks; an open one is refused.
func (a *Agent) newRestore(j *job) error {
	settled, err := j.restoreSettled()
	if err != nil {
		return fail(ldapschema.RCWrongState, err)
	}
	if !settled {
		return failf(ldapschema.RCWrongState, "an earlier restore of this backup is not settled; see its intent record %s", j.record("restore").Path)
	}
	if err := j.record("restore").Remove(); err != nil {
		return fail(ldapschema.RCWrongState, err)
	}
	return nil
}

// restoreDiff lists what differs between the backup and today's VM: directory
// attributes of the VM and its disks, and the domain's memory, vCPUs and disks.
func (a *Agent) restoreDiff(j *job, savedXML, savedLDIF string) ([]string, error) {
	saved, err := ldapschema.ParseLDIF(savedLDIF)
	if err != nil {
		return nil, fail(ldapschema.RCCannotSaveBackendEntry, err)
	}
	current, err := a.o.Store.SubtreeEntries(a.tree.VM(j.vm.Name))
	if err != nil {
		return nil, fail(ldapschema.RCCannotConnectBackend, err)
	}
	plan, err := ldapschema.PlanSubtreeRestore(a.tree, j.vm.Name, saved, current)
	if err != nil {
		return nil, fail(ldapschema.RCCannotSaveBackendEntry, err)
	}
	out := plan.Differences
	// The domain as libvirt has it now against the saved XML.
	sv, err := format.ParseDomainXML(savedXML)
	if err != nil {
		return nil, fail(ldapschema.RCCannotReadXML, err)
	}
	info, err := a.o.Hypervisor.Domain(j.vm.Name)
	switch {
	case errors.Is(err, libvirt.ErrDomainNotFound):
		out = append(out, "domain: not defined now; the restore defines it from the backup")
	case err != nil:
		return nil, err
	default:
		nv, err := format.ParseDomainXML(info.XML)
		if err != nil {
			return nil, fail(ldapschema.RCCannotReadXML, err)
		}
		if sv.MemoryKiB != nv.MemoryKiB {
			out = append(out, fmt.Sprintf("domain memory: backup %d MiB, now %d MiB", sv.MemoryKiB/1024, nv.MemoryKiB/1024))
		}
		if sv.VCPUs != nv.VCPUs {
			out = append(out, fmt.Sprintf("domain vCPUs: backup %d, now %d", sv.VCPUs, nv.VCPUs))
		}
		was, now := diskMap(sv.Disks), diskMap(nv.Disks)
		for t, src := range was {
			if cur, ok := now[t]; !ok {
				out = append(out, fmt.Sprintf("domain disk %s: removed since the backup (%s)", t, src))
			} else if cur != src {
				out = append(out, fmt.Sprintf("domain disk %s: backup %s, now %s", t, src, cur))
			}
		}
		for t, src := range now {
			if _, ok := was[t]; !ok {
				out = append(out, fmt.Sprintf("domain disk %s: added since the backup (%s); the restored VM will not have it", t, src))
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

func diskMap(ds []libvirt.Disk) map[string]string {
	m := map[string]string{}
	for _, d := range ds {
		m[d.Target] = d.Source
	}
	return m
}
