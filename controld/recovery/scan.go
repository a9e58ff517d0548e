package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// The scanner reads what the node daemons left on the backup storage, in
// the backup location of format.Layout:
//
//	<root>/<vm-persistent|vm-templates>/<storage pool>/<vm>/<leaf>/
//	    <vm>.state.<leaf>  <vm>.xml.<leaf>  <vm>.ldif.<leaf>  <disk file>.<leaf>...
//
// It never writes and never asks the directory; Validate compares its report
// with the directory.

// ImageChecker judges one backed-up disk image. Implementations only read.
type ImageChecker interface {
	// CheckImage returns nil for a complete, healthy image of the given
	// format ("" for any), else why not.
	CheckImage(ctx context.Context, path, imageFormat string) error
}

// QemuImgChecker checks images with format.CheckImage, the check the node
// makes before it restores one; qemu-img must be installed where the backup
// storage is mounted.
type QemuImgChecker struct{}

// CheckImage returns nil for a complete, healthy image of the given format.
func (QemuImgChecker) CheckImage(ctx context.Context, path, imageFormat string) error {
	return format.CheckImage(ctx, path, imageFormat)
}

// ScanOptions configure Scan.
type ScanOptions struct {
	Images ImageChecker // default QemuImgChecker{}
	// Progress, when set, is told about each VM directory before it is read.
	Progress func(dir string)
}

// RootSource says where a scanned root came from.
type RootSource struct {
	Path   string `json:"path"`
	Source string `json:"source"` // the configuration's DN, or SourceCommandLine
}

// SourceCommandLine is the source of a root the operator named.
const SourceCommandLine = "command line"

// ScannedRoot is one backup root and what reading it gave.
type ScannedRoot struct {
	RootSource
	Error string `json:"error,omitempty"` // e.g. not mounted here
}

// IterationDisk is one disk of a backed-up iteration.
type IterationDisk struct {
	Target string `json:"target"`
	Source string `json:"source"` // the image path on the node
	Format string `json:"format,omitempty"`
	File   string `json:"file"` // the backup file
	Bytes  int64  `json:"bytes"`
}

// IterationStatus is what recover makes of one iteration.
type IterationStatus string

// The statuses of an iteration, from the files (broken) or from comparing
// them with the directory (the others).
const (
	StatusNew            IterationStatus = "new"             // complete, and no leaf knows it
	StatusKnown          IterationStatus = "known"           // a finished, successful leaf exists
	StatusKnownDifferent IterationStatus = "known-different" // a leaf of that name exists in another state
	StatusBroken         IterationStatus = "broken"          // incomplete or damaged: never imported
	StatusDuplicate      IterationStatus = "duplicate"       // a copy of an iteration found first in another root
)

// Iteration is one backup found on the storage.
type Iteration struct {
	Root        string          `json:"root"`
	Kind        string          `json:"kind"`        // vm-persistent or vm-templates
	StoragePool string          `json:"storagePool"` // the images' directory name
	VM          string          `json:"vm"`
	Leaf        string          `json:"leaf"`
	Dir         string          `json:"dir"`
	Status      IterationStatus `json:"status"`
	Problems    []string        `json:"problems,omitempty"` // why it is broken
	Notes       []string        `json:"notes,omitempty"`
	State       string          `json:"state,omitempty"` // "saved" (the VM ran) or "placeholder"
	Disks       []IterationDisk `json:"disks,omitempty"`
	Bytes       int64           `json:"bytes"`
	// From the saved LDIF.
	Node   string `json:"node,omitempty"`
	VMPool string `json:"vmPool,omitempty"`
	VMType string `json:"vmType,omitempty"`
	// The leaf in the directory, for known and known-different.
	Directory string `json:"directory,omitempty"`

	ldif []*ldap.Entry // the saved subtree, when it parsed
}

// Broken reports whether the files cannot be recovered.
func (it *Iteration) Broken() bool { return len(it.Problems) > 0 }

func (it *Iteration) problem(format string, a ...any) {
	it.Problems = append(it.Problems, fmt.Sprintf(format, a...))
}

// Stray is something on the backup storage that is not a backup iteration.
type Stray struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// ScanReport is everything found below the roots.
type ScanReport struct {
	Roots      []ScannedRoot `json:"roots"`
	Iterations []*Iteration  `json:"-"` // reported per VM by the plan
	Strays     []Stray       `json:"strays,omitempty"`
}

// Scan reads every iteration below the roots. A broken iteration or
// an unreadable directory is reported and skipped; nothing aborts the scan.
func Scan(ctx context.Context, roots []RootSource, o ScanOptions) *ScanReport {
	if o.Images == nil {
		o.Images = QemuImgChecker{}
	}
	r := &ScanReport{}
	seen := map[string]bool{}
	for _, root := range roots {
		sr := ScannedRoot{RootSource: root}
		key := filepath.Clean(root.Path)
		if real, err := filepath.EvalSymlinks(key); err == nil {
			key = real
		}
		if seen[key] {
			continue // the same root named twice (configured and on the command line)
		}
		seen[key] = true
		st, err := os.Stat(root.Path)
		switch {
		case err != nil:
			sr.Error = err.Error()
		case !st.IsDir():
			sr.Error = "not a directory"
		}
		r.Roots = append(r.Roots, sr)
		if sr.Error == "" {
			r.scanRoot(ctx, filepath.Clean(root.Path), o)
		}
	}
	// Stable: copies of one iteration stay in the order of the roots, so the
	// configured root's copy comes first.
	sort.SliceStable(r.Iterations, func(i, j int) bool {
		a, b := r.Iterations[i], r.Iterations[j]
		if a.VM != b.VM {
			return a.VM < b.VM
		}
		return a.Leaf < b.Leaf
	})
	return r
}

func (r *ScanReport) stray(path, format string, a ...any) {
	r.Strays = append(r.Strays, Stray{Path: path, Reason: fmt.Sprintf(format, a...)})
}

// errSkip tells subdirs an entry belongs there and holds no iterations.
var errSkip = errors.New("not an iteration's directory")

// subdirs lists dir; entries that are not directories, or whose names fail
// ok (but for errSkip), are strays.
func (r *ScanReport) subdirs(dir, level string, ok func(string) error) []string {
	es, err := os.ReadDir(dir)
	if err != nil {
		r.stray(dir, "cannot read: %v", err)
		return nil
	}
	var out []string
	for _, e := range es {
		p := filepath.Join(dir, e.Name())
		if !e.IsDir() {
			r.stray(p, "a file where a %s directory belongs", level)
			continue
		}
		if err := ok(e.Name()); errors.Is(err, errSkip) {
			continue
		} else if err != nil {
			r.stray(p, "not a %s directory: %v", level, err)
			continue
		}
		out = append(out, e.Name())
	}
	return out
}

func (r *ScanReport) scanRoot(ctx context.Context, root string, o ScanOptions) {
	kinds := r.subdirs(root, "vm-persistent or vm-templates", func(n string) error {
		if n == format.ChunkStoreDir {
			return errSkip // the root's chunk store, read through the indexes
		}
		if n != ldapschema.StoragePersistent && n != ldapschema.StorageTemplates {
			return errors.New("unknown kind")
		}
		return nil
	})
	for _, kind := range kinds {
		for _, pool := range r.subdirs(filepath.Join(root, kind), "storage pool", ldapschema.SafeName) {
			for _, vm := range r.subdirs(filepath.Join(root, kind, pool), "VM", ldapschema.SafeName) {
				vmDir := filepath.Join(root, kind, pool, vm)
				if o.Progress != nil {
					o.Progress(vmDir)
				}
				leaves := r.subdirs(vmDir, "backup iteration", func(n string) error {
					if !ldapschema.IsLeafName(n) {
						return errors.New("name is not a UTC time YYYYMMDDThhmmssZ")
					}
					return nil
				})
				for _, leaf := range leaves {
					if ctx.Err() != nil {
						return
					}
					it := scanIteration(ctx, root, kind, pool, vm, leaf, o.Images)
					r.Iterations = append(r.Iterations, it)
				}
			}
		}
	}
}

// scanIteration reads and checks the files of one iteration directory.
func scanIteration(ctx context.Context, root, kind, pool, vm, leaf string, images ImageChecker) *Iteration {
	if images == nil {
		images = QemuImgChecker{}
	}
	l := format.Layout{BackupRoot: root, Kind: kind, Pool: pool, VM: vm, Leaf: leaf}
	it := &Iteration{Root: root, Kind: kind, StoragePool: pool, VM: vm, Leaf: leaf, Dir: l.BackupDir()}
	name := l.BackupName
	expected := map[string]bool{}
	file := func(base string) (string, int64, bool) {
		n := name(base)
		expected[n] = true
		p := filepath.Join(it.Dir, n)
		st, err := os.Stat(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				it.problem("%s is missing", n)
			} else {
				it.problem("%s: %v", n, err)
			}
			return p, 0, false
		}
		if !st.Mode().IsRegular() {
			it.problem("%s is not a regular file", n)
			return p, 0, false
		}
		it.Bytes += st.Size()
		return p, st.Size(), true
	}

	if p, _, ok := file(l.StateName()); ok {
		kind, err := format.ReadState(p)
		if err != nil {
			it.problem("%s: %v", name(l.StateName()), err)
		}
		it.State = string(kind)
	}
	if p, _, ok := file(l.LDIFName()); ok {
		it.readLDIF(p, name(l.LDIFName()))
	}
	if p, _, ok := file(l.XMLName()); ok {
		disks, err := xmlDisks(p, vm)
		if err != nil {
			it.problem("%s: %v", name(l.XMLName()), err)
		}
		for _, d := range disks {
			// Cleaned: the saved XML may spell a path the node accepted
			// (it compares cleaned paths) in another way.
			base, err := format.DiskFileName(filepath.Clean(d.Source))
			if err != nil {
				it.problem("disk %s: unusable image path %q", d.Target, d.Source)
				continue
			}
			ip, size, ok := file(base)
			it.Disks = append(it.Disks, IterationDisk{Target: d.Target, Source: d.Source, Format: d.Format, File: name(base), Bytes: size})
			if !ok {
				continue
			}
			if err := images.CheckImage(ctx, ip, d.Format); err != nil {
				it.problem("disk %s (%s): %v", d.Target, name(base), err)
			}
		}
	}
	if es, err := os.ReadDir(it.Dir); err == nil {
		for _, e := range es {
			if !expected[e.Name()] {
				it.Notes = append(it.Notes, "unexpected file "+e.Name())
			}
		}
	}
	if it.Broken() {
		it.Status = StatusBroken
	} else {
		it.Status = StatusNew // until the directory says otherwise
	}
	return it
}

// readLDIF parses the saved subtree and checks it describes this VM: the VM
// entry itself and nothing outside it (under any base: the directory may be
// rebuilt with another one).
func (it *Iteration) readLDIF(path, name string) {
	b, err := os.ReadFile(path)
	if err != nil {
		it.problem("%s: %v", name, err)
		return
	}
	entries, err := ldapschema.ParseLDIF(string(b))
	if err != nil {
		it.problem("%s: %v", name, err)
		return
	}
	var vmEntry *ldap.Entry
	for _, e := range entries {
		rel, err := relativeToVM(e.DN, it.VM)
		if err != nil {
			it.problem("%s: %v", name, err)
			return
		}
		if len(rel) == 0 {
			vmEntry = e
		}
	}
	if vmEntry == nil {
		it.problem("%s holds no entry for VM %s", name, it.VM)
		return
	}
	it.Node = vmEntry.GetAttributeValue(ldapschema.AttrNode)
	it.VMPool = vmEntry.GetAttributeValue(ldapschema.AttrVirtualMachinePool)
	it.VMType = vmEntry.GetAttributeValue(ldapschema.AttrVirtualMachineType)
	want := ldapschema.StoragePersistent
	if strings.EqualFold(it.VMType, ldapschema.VMTypeTemplate) {
		want = ldapschema.StorageTemplates
	}
	if want != it.Kind {
		it.Notes = append(it.Notes, fmt.Sprintf("the saved VM is of type %q, which is backed up to %s, not %s", it.VMType, want, it.Kind))
	}
	it.ldif = entries
}

// xmlDisks reads the saved domain XML: its name must be the VM's, and
// its file-backed hard disks are the images the iteration must hold.
func xmlDisks(path, vm string) ([]IterationDisk, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dom, err := format.ParseDomainXML(string(b))
	if err != nil {
		return nil, err
	}
	if err := dom.CheckName(vm); err != nil {
		return nil, err
	}
	var out []IterationDisk
	for _, d := range dom.Disks {
		out = append(out, IterationDisk{Target: d.Target, Source: d.Source, Format: dom.Formats[d.Target]})
	}
	return out, nil
}
