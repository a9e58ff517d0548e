package format

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Layout names the files of one backup iteration (a leaf), as the original system
// and its web UI expect them:
//
//	<retain root>/<kind>/<pool>/<vm>/<leaf>/<vm>.state, <vm>.xml, <vm>.ldif, <disk file>
//	<backup root>/<kind>/<pool>/<vm>/<leaf>/<same names>.<leaf>
//
// Recovery, which only reads the backup location, leaves RetainRoot empty.
type Layout struct {
	RetainRoot, BackupRoot string
	Kind                   string // vm-persistent or vm-templates
	Pool, VM, Leaf         string
}

// Validate refuses names that would lead outside the configured roots.
func (l Layout) Validate() error {
	for _, p := range []struct{ what, v string }{{"pool", l.Pool}, {"VM", l.VM}, {"kind", l.Kind}} {
		if err := ldapschema.SafeName(p.v); err != nil {
			return fmt.Errorf("%s name %q: %w", p.what, p.v, err)
		}
	}
	if !ldapschema.IsLeafName(l.Leaf) {
		return fmt.Errorf("leaf name %q is not a UTC timestamp YYYYMMDDTHHMMSSZ", l.Leaf)
	}
	for _, root := range []string{l.RetainRoot, l.BackupRoot} {
		if !filepath.IsAbs(root) {
			return fmt.Errorf("directory %q is not absolute", root)
		}
	}
	return nil
}

func (l Layout) rel() string { return filepath.Join(l.Kind, l.Pool, l.VM, l.Leaf) }

// RetainDir is this leaf's directory in the retain location.
func (l Layout) RetainDir() string { return filepath.Join(l.RetainRoot, l.rel()) }

// BackupDir is this leaf's directory in the backup location.
func (l Layout) BackupDir() string { return filepath.Join(l.BackupRoot, l.rel()) }

// RetainPath and BackupPath are the leaf's directories held with their
// configured roots: nothing below a root is followed if it is a link.
func (l Layout) RetainPath() hostio.Path { return hostio.In(l.RetainRoot).MustJoin(l.rel()) }
func (l Layout) BackupPath() hostio.Path { return hostio.In(l.BackupRoot).MustJoin(l.rel()) }

// VMRetainDir is the VM's directory in the retain location (parent of the leaves).
func (l Layout) VMRetainDir() string {
	return filepath.Join(l.RetainRoot, l.Kind, l.Pool, l.VM)
}

// StateName, XMLName and LDIFName are the file names in the retain directory.
func (l Layout) StateName() string { return l.VM + ".state" }
func (l Layout) XMLName() string   { return l.VM + ".xml" }
func (l Layout) LDIFName() string  { return l.VM + ".ldif" }

// ownFiles are the names the backup itself writes in the leaf's directories,
// with the temporary forms they pass through.
func (l Layout) ownFiles() []string {
	var out []string
	for _, n := range []string{l.StateName(), l.XMLName(), l.LDIFName()} {
		out = append(out, n, n+".tmp", n+".partial")
	}
	return out
}

// CheckDiskName refuses a disk file whose name is one of the backup's own
// files: retained beside them, it would be overwritten by one (and a
// rollback would put that file in place as the disk).
func (l Layout) CheckDiskName(base string) error {
	for _, n := range l.ownFiles() {
		if base == n {
			return fmt.Errorf("disk file %q has the name of the backup's own %s file", base, n)
		}
	}
	return nil
}

// BackupName is the name a retained file gets in the backup directory.
func (l Layout) BackupName(name string) string { return name + "." + l.Leaf }

// RetainedDisk is where this iteration keeps the disk whose image is source
// while it is retained: the image's own file name in RetainDir.
func (l Layout) RetainedDisk(source string) string {
	return filepath.Join(l.RetainDir(), filepath.Base(source))
}

// BackupDisk is where this iteration keeps the disk whose image is source
// in the backup location.
func (l Layout) BackupDisk(source string) string {
	return filepath.Join(l.BackupDir(), l.BackupName(filepath.Base(source)))
}

// Storage is how a backup root keeps the disks of its iterations.
type Storage string

const (
	// StorageFull: every iteration holds a whole copy of each disk image.
	StorageFull Storage = "full"
	// StorageChunks: each disk's chunks go to the root's chunk store once;
	// the iteration holds an index per disk.
	StorageChunks Storage = "chunks"
)

// ParseStorage reads a configured storage; empty is StorageFull, so an
// installation that never chose keeps its layout.
func ParseStorage(s string) (Storage, error) {
	switch Storage(s) {
	case "", StorageFull:
		return StorageFull, nil
	case StorageChunks:
		return StorageChunks, nil
	}
	return "", fmt.Errorf("storage %q: want %q or %q", s, StorageFull, StorageChunks)
}

// ChunkStoreDir is the chunk store's directory in a backup root: the dot
// keeps it apart from the kinds' directories.
const ChunkStoreDir = ".chunks"

// OpenChunkStore is the chunk store of the backup root; its writes pass seam.
func OpenChunkStore(backupRoot string, seam *hostio.Seam) *ChunkStore {
	return &ChunkStore{Dir: hostio.In(backupRoot).MustJoin(ChunkStoreDir), Seam: seam}
}

// ChunkStore is the chunk store of the iteration's backup root.
func (l Layout) ChunkStore(seam *hostio.Seam) *ChunkStore { return OpenChunkStore(l.BackupRoot, seam) }

// IndexName is the name of the index of the disk whose image is source,
// before the leaf's suffix: it is the BackupName(IndexName) in BackupDir.
func IndexName(source string) string { return filepath.Base(source) + ".index" }

// BackupIndex is where this iteration keeps the index of the disk whose
// image is source (in chunks storage).
func (l Layout) BackupIndex(source string) hostio.Path {
	return l.BackupPath().MustJoin(l.BackupName(IndexName(source)))
}

// DiskFileName is the file name of a disk image, checked to stay inside a directory.
func DiskFileName(source string) (string, error) {
	if !filepath.IsAbs(source) || strings.Contains(source, "\x00") {
		return "", fmt.Errorf("disk path %q is not an absolute path", source)
	}
	if filepath.Clean(source) != source {
		return "", fmt.Errorf("disk path %q is not clean", source)
	}
	base := filepath.Base(source)
	if err := ldapschema.SafeName(base); err != nil {
		return "", fmt.Errorf("disk file %q: %w", source, err)
	}
	return base, nil
}
