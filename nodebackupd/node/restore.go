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
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// The restore keeps the backup's names (with the .<leaf> suffix) in the retain
// directory: the web UI looks for <retain>/<kind>/<pool>/<vm>/<leaf>/<vm>.ldif.<leaf>
// after unretainSmallFiles, and copies it to <vm>.ldif when the operator goes on.

// diffPrefix starts every description value a restore publishes on its leaf.
const diffPrefix = "restore: "

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
	src, dst := j.layout.BackupDir(), j.layout.RetainDir()
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(src, j.layout.BackupName(n))); err != nil {
			return nil, 0, failf(ldapschema.RCMissingFiles, "backup file missing: %v", err)
		}
	}
	if err := j.mkdirOwned(dst); err != nil {
		return nil, 0, err
	}
	var out []string
	var total int64
	var srcs []string
	for _, n := range names {
		srcs = append(srcs, filepath.Join(src, j.layout.BackupName(n)))
	}
	m := a.newMeter(j, "unretain", srcs)
	for _, n := range names {
		to := filepath.Join(dst, j.layout.BackupName(n))
		fromP, toP := j.layout.BackupPath().MustJoin(j.layout.BackupName(n)), j.layout.RetainPath().MustJoin(j.layout.BackupName(n))
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
	paths, _, err := a.unretain(ctx, j, []string{j.layout.XMLName(), j.layout.LDIFName()}, ldapschema.RCCannotCopyToBackup)
	if err != nil {
		return nil, err
	}
	savedXML, err := os.ReadFile(paths[0])
	if err != nil {
		return nil, fail(ldapschema.RCCannotReadXML, err)
	}
	savedLDIF, err := os.ReadFile(paths[1])
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
	if err := writeFileSync(filepath.Join(j.layout.RetainDir(), j.layout.BackupName(j.vm.Name+".diff")), []byte(body), 0o640); err != nil {
		return nil, fail(ldapschema.RCCannotCopyToBackup, err)
	}
	desc := []string{diffPrefix + fmt.Sprintf("%d difference(s)", len(diff))}
	for _, d := range diff {
		desc = append(desc, diffPrefix+d)
	}
	j.extra = map[string][]string{ldapschema.AttrDescription: desc}
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
		if err := libvirt.CheckImage(p); err != nil {
			return nil, fail(ldapschema.RCCorruptImage, err)
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
	disks, err := libvirt.DomainXMLDisks(x)
	if err != nil {
		return nil, fail(ldapschema.RCCannotReadXML, err)
	}
	for _, d := range disks {
		if _, err := DiskFileName(d.Source); err != nil {
			return nil, fail(ldapschema.RCUnsupportedParameter, err)
		}
	}
	return disks, nil
}

func (a *Agent) savedXML(j *job) (string, error) {
	p := filepath.Join(j.layout.RetainDir(), j.layout.BackupName(j.layout.XMLName()))
	b, err := os.ReadFile(p)
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
	dir := j.layout.RetainDir()
	p := filepath.Join(dir, j.layout.LDIFName())
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		p = filepath.Join(dir, j.layout.BackupName(j.layout.LDIFName()))
		b, err = os.ReadFile(p)
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
// and disks stay until the restored VM runs), puts the saved disks in place and
// resumes the saved state with the saved XML; then the saved directory entries
// are written back.
func (a *Agent) restore(ctx context.Context, j *job) ([]string, error) {
	start := time.Now()
	if err := a.otherActive(j); err != nil {
		return nil, err
	}
	disks, err := a.savedDisks(j)
	if err != nil {
		return nil, err
	}
	entries, err := a.savedLDIF(j)
	if err != nil {
		return nil, err
	}
	dir := j.layout.RetainDir()
	var rd []libvirt.RetainedDisk
	for _, d := range disks {
		rd = append(rd, libvirt.RetainedDisk{Target: d.Target, Source: d.Source,
			Retained: filepath.Join(dir, j.layout.BackupName(filepath.Base(d.Source)))})
	}
	res, err := a.o.Hypervisor.Restore(ctx, libvirt.RestoreRequest{
		Domain:       j.vm.Name,
		XMLFile:      filepath.Join(dir, j.layout.BackupName(j.layout.XMLName())),
		StateFile:    filepath.Join(dir, j.layout.BackupName(j.layout.StateName())),
		Disks:        rd,
		ParkDir:      dir,
		WithoutState: j.cfg.RestoreWithoutState,
		ForceStart:   j.cfg.ForceStart,
		Ownership:    libvirt.Ownership{Owner: j.cfg.Owner, Group: j.cfg.Group, Perm: j.cfg.Permission},
	})
	if err != nil {
		return nil, err
	}
	j.log.WithField("running", res.Running).WithField("fromState", res.FromState).Info("VM restored")
	if err := a.writeBack(j.vm, entries); err != nil {
		return nil, fail(ldapschema.RCCannotSaveBackendEntry, err)
	}
	// The restored VM runs: the retain copy and the parked files may go.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fail(ldapschema.RCRetainNotEmpty, err)
	}
	j.extra = map[string][]string{ldapschema.AttrDescription: nil}
	return []string{"restore: " + seconds(time.Since(start)), "restoreDowntime: " + seconds(res.Downtime)}, nil
}

// skipWriteBack: what a restore never rewrites — the backup plan and its leaves
// are not part of the VM as it was, and the VM stays on the host restoring it.
func (a *Agent) skipWriteBack(vm string, dn string) bool {
	n := ldapschema.NormalizeDN(dn)
	b := ldapschema.NormalizeDN(a.tree.VMBackup(vm))
	return n == b || strings.HasSuffix(n, ","+b)
}

var keepAttrs = map[string]bool{
	strings.ToLower(ldapschema.AttrNode):        true,
	strings.ToLower(ldapschema.AttrObjectClass): true,
}

// writeBack makes the VM's subtree in the directory what the saved LDIF says:
// entries added since are removed, changed attributes are set back, removed
// entries are re-created.
func (a *Agent) writeBack(vm ldapschema.VM, saved []*ldap.Entry) error {
	root := ldapschema.NormalizeDN(a.tree.VM(vm.Name))
	want := map[string]*ldap.Entry{}
	for _, e := range saved {
		n := ldapschema.NormalizeDN(e.DN)
		if n != root && !strings.HasSuffix(n, ","+root) {
			return fmt.Errorf("saved LDIF holds %s, outside the VM", e.DN)
		}
		if a.skipWriteBack(vm.Name, e.DN) {
			continue
		}
		want[n] = e
	}
	if _, ok := want[root]; !ok {
		return fmt.Errorf("saved LDIF lacks the VM entry %s", a.tree.VM(vm.Name))
	}
	current, err := a.o.Store.SubtreeEntries(a.tree.VM(vm.Name))
	if err != nil {
		return err
	}
	have := map[string]*ldap.Entry{}
	for _, e := range current {
		if isLeaf(e) || a.skipWriteBack(vm.Name, e.DN) {
			continue
		}
		have[ldapschema.NormalizeDN(e.DN)] = e
	}
	// Remove what the VM did not have, deepest first.
	var gone []string
	for n := range have {
		if _, ok := want[n]; !ok {
			gone = append(gone, have[n].DN)
		}
	}
	sort.Slice(gone, func(i, k int) bool { return strings.Count(gone[i], ",") > strings.Count(gone[k], ",") })
	for _, dn := range gone {
		if err := a.o.Store.Delete(dn); err != nil {
			return err
		}
	}
	// Add or set back, parents first.
	var order []*ldap.Entry
	for _, e := range want {
		order = append(order, e)
	}
	sort.Slice(order, func(i, k int) bool { return strings.Count(order[i].DN, ",") < strings.Count(order[k].DN, ",") })
	for _, e := range order {
		cur, ok := have[ldapschema.NormalizeDN(e.DN)]
		if !ok {
			if err := a.o.Store.Add(ldapschema.AddRequestOf(e)); err != nil {
				return err
			}
			continue
		}
		rep := map[string][]string{}
		for _, at := range e.Attributes {
			if keepAttrs[strings.ToLower(at.Name)] {
				continue
			}
			if !sameValues(cur.GetAttributeValues(at.Name), at.Values) {
				rep[at.Name] = at.Values
			}
		}
		for _, at := range cur.Attributes {
			if keepAttrs[strings.ToLower(at.Name)] {
				continue
			}
			if len(e.GetAttributeValues(at.Name)) == 0 {
				rep[at.Name] = nil
			}
		}
		if len(rep) > 0 {
			if err := a.o.Store.Update(cur.DN, "", rep); err != nil {
				return err
			}
		}
	}
	return nil
}

func sameValues(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x := append([]string(nil), a...)
	y := append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
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
	var out []string
	rel := func(dn string) string {
		n := ldapschema.NormalizeDN(dn)
		root := ldapschema.NormalizeDN(a.tree.VM(j.vm.Name))
		if n == root {
			return "VM"
		}
		return strings.TrimSuffix(dn, ","+a.tree.VM(j.vm.Name))
	}
	want := map[string]*ldap.Entry{}
	for _, e := range saved {
		if !a.skipWriteBack(j.vm.Name, e.DN) {
			want[ldapschema.NormalizeDN(e.DN)] = e
		}
	}
	have := map[string]*ldap.Entry{}
	for _, e := range current {
		if !isLeaf(e) && !a.skipWriteBack(j.vm.Name, e.DN) {
			have[ldapschema.NormalizeDN(e.DN)] = e
		}
	}
	for n, e := range have {
		if _, ok := want[n]; !ok {
			out = append(out, fmt.Sprintf("%s: added since the backup; the restore removes it", rel(e.DN)))
		}
	}
	for n, e := range want {
		cur, ok := have[n]
		if !ok {
			out = append(out, fmt.Sprintf("%s: removed since the backup; the restore re-creates it", rel(e.DN)))
			continue
		}
		names := map[string]bool{}
		for _, at := range e.Attributes {
			names[at.Name] = true
		}
		for _, at := range cur.Attributes {
			names[at.Name] = true
		}
		for name := range names {
			if strings.EqualFold(name, ldapschema.AttrObjectClass) {
				continue
			}
			was, now := e.GetAttributeValues(name), cur.GetAttributeValues(name)
			if sameValues(was, now) {
				continue
			}
			note := ""
			if keepAttrs[strings.ToLower(name)] {
				note = " (kept: the VM is restored on this host)"
			}
			out = append(out, fmt.Sprintf("%s %s: backup %q, now %q%s", rel(e.DN), name, strings.Join(was, ","), strings.Join(now, ","), note))
		}
	}
	// The domain as libvirt has it now against the saved XML.
	sv, err := libvirt.SummarizeXML(savedXML)
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
		nv, err := libvirt.SummarizeXML(info.XML)
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
