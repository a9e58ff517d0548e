package format

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// A chunk's modification time is its mark: every retain that names a chunk
// it did not write touches it, and garbage collection touches every chunk
// an index names before it removes those left untouched for a grace
// period. (Proxmox marks with the access time; the modification time does
// not depend on the file system's atime options, and a chunk's content
// never changes after its rename.)

// DefaultGrace is longer than any retain runs: a chunk a running retain
// found in the store, or wrote, is touched within it.
const DefaultGrace = 24*time.Hour + 5*time.Minute

// Touch marks chunk id as in use now.
func (s *ChunkStore) Touch(id ChunkID) error {
	p := s.ChunkPath(id)
	return s.Seam.Do("touch "+p.String(), func() error {
		f, err := hostio.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		now := unix.NsecToTimeval(time.Now().UnixNano())
		return unix.Futimes(int(f.Fd()), []unix.Timeval{now, now})
	})
}

// IndexRef is one index file found in a backup root.
type IndexRef struct {
	Path           hostio.Path
	Kind, Pool, VM string
	Leaf, Disk     string // Disk: the image's file name, or the state file's
}

func (r IndexRef) String() string { return fmt.Sprintf("%s %s %s", r.VM, r.Leaf, r.Disk) }

// FindIndexes lists the index files of every iteration in the backup root,
// in the layout's places (<kind>/<pool>/<vm>/<leaf>/<disk>.index.<leaf>).
func FindIndexes(root string) ([]IndexRef, error) {
	var out []IndexRef
	for _, kind := range []string{ldapschema.StoragePersistent, ldapschema.StorageTemplates} {
		matches, err := filepath.Glob(filepath.Join(root, kind, "*", "*", "*", "*.index.*"))
		if err != nil {
			return nil, err
		}
		for _, m := range matches {
			if ref, _, err := ParseIndexPath(m); err == nil {
				out = append(out, ref)
			}
		}
	}
	return out, nil
}

// ParseIndexPath reads an index file's absolute path as the layout places
// it, and returns the backup root it lies in.
func ParseIndexPath(path string) (IndexRef, string, error) {
	path = filepath.Clean(path)
	parts := strings.Split(path, string(filepath.Separator))
	if !filepath.IsAbs(path) || len(parts) < 6 {
		return IndexRef{}, "", fmt.Errorf("%s: not <backup root>/<kind>/<pool>/<vm>/<leaf>/<disk>.index.<leaf>", path)
	}
	parts = parts[len(parts)-5:] // kind, pool, vm, leaf, file
	root := filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(path)))))
	leaf := parts[3]
	disk, ok := strings.CutSuffix(parts[4], ".index."+leaf)
	if !ok || disk == "" || !ldapschema.IsLeafName(leaf) ||
		(parts[0] != ldapschema.StoragePersistent && parts[0] != ldapschema.StorageTemplates) {
		return IndexRef{}, "", fmt.Errorf("%s: not <backup root>/<kind>/<pool>/<vm>/<leaf>/<disk>.index.<leaf>", path)
	}
	rel, _ := filepath.Rel(root, path)
	return IndexRef{Path: hostio.In(root).MustJoin(rel), Kind: parts[0], Pool: parts[1], VM: parts[2], Leaf: leaf, Disk: disk}, root, nil
}

// GCResult is what a garbage collection found and did.
type GCResult struct {
	Indexes        int   // indexes read
	Chunks         int   // chunk files in the store before
	Removed        int   // chunks no index names, untouched for the grace period
	RemovedBytes   int64 //
	Pending        int   // chunks no index names, still within the grace period
	PendingBytes   int64 // the space they free at a later collection
	Missing        []string
	TemporaryFiles int // left by a retain that crashed, removed once older than grace
	BadIndexes     []string
}

// CollectGarbage removes the chunks of the backup root's store that no
// index names and that nobody touched for grace. It never removes a chunk a
// retain running at the same time is about to name: that retain touched it
// (or wrote it) less than grace ago. An index that cannot be read stops the
// collection before anything is removed.
func CollectGarbage(ctx context.Context, store *ChunkStore, root string, grace time.Duration) (GCResult, error) {
	var r GCResult
	start := time.Now()
	refs, err := FindIndexes(root)
	if err != nil {
		return r, err
	}
	used := map[ChunkID]bool{}
	for _, ref := range refs {
		ids, err := IndexChunks(ref.Path)
		if err != nil {
			r.BadIndexes = append(r.BadIndexes, fmt.Sprintf("%s: %v", ref, err))
			continue
		}
		r.Indexes++
		for _, id := range ids {
			if used[id] {
				continue
			}
			used[id] = true
			if err := ctx.Err(); err != nil {
				return r, err
			}
			if err := store.Touch(id); err != nil {
				if errors.Is(err, os.ErrNotExist) {
					r.Missing = append(r.Missing, fmt.Sprintf("%s (%s)", id, ref))
					continue
				}
				return r, err
			}
		}
	}
	if len(r.BadIndexes) > 0 {
		return r, fmt.Errorf("unreadable indexes, nothing removed: %s", strings.Join(r.BadIndexes, "; "))
	}
	cutoff := start.Add(-grace)
	err = store.each(func(p hostio.Path, id ChunkID, fi fs.FileInfo, tmp bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !tmp {
			r.Chunks++
			if used[id] {
				return nil
			}
		}
		if !fi.ModTime().Before(cutoff) {
			if !tmp {
				r.Pending++
				r.PendingBytes += fi.Size()
			}
			return nil
		}
		if err := store.Seam.Remove(p); err != nil {
			return err
		}
		if tmp {
			r.TemporaryFiles++
		} else {
			r.Removed++
			r.RemovedBytes += fi.Size()
		}
		return nil
	})
	sort.Strings(r.Missing)
	return r, err
}

// each calls f for every file of the store, in order: a chunk with its ID,
// or a temporary file (tmp true) a writer left.
func (s *ChunkStore) each(f func(p hostio.Path, id ChunkID, fi fs.FileInfo, tmp bool) error) error {
	dirs, err := os.ReadDir(s.Dir.String())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !d.IsDir() || len(d.Name()) != 4 {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.Dir.String(), d.Name()))
		if err != nil {
			return err
		}
		for _, e := range files {
			p := s.Dir.MustJoin(d.Name(), e.Name())
			fi, err := hostio.Lstat(p)
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			id, ok := ParseChunkID(e.Name())
			tmp := !ok && strings.HasSuffix(e.Name(), ".tmp")
			if !ok && !tmp {
				continue
			}
			if err := f(p, id, fi, tmp); err != nil {
				return err
			}
		}
	}
	return nil
}

// BadChunk is a chunk verify found damaged or missing, with every backup
// (vm leaf disk) whose index names it.
type BadChunk struct {
	ID      ChunkID
	Problem string
	Backups []string
}

// VerifyResult is what a verify found.
type VerifyResult struct {
	Checked int
	Bad     []BadChunk
}

// Verify reads the chunks of part (0 to parts-1; chunks are split by their
// name, so that parts runs check every chunk once) and checks each against
// its checksum and name. A damaged chunk is moved aside (<id>.bad), so the
// next backup that reads the same content writes it again. Chunks an index
// names but the store lacks are reported too, in any part.
func Verify(ctx context.Context, store *ChunkStore, root string, part, parts int) (VerifyResult, error) {
	var r VerifyResult
	if parts < 1 || part < 0 || part >= parts {
		return r, fmt.Errorf("part %d of %d", part, parts)
	}
	problems := map[ChunkID]string{}
	err := store.each(func(p hostio.Path, id ChunkID, _ fs.FileInfo, tmp bool) error {
		if tmp || int(id[0])%parts != part {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		r.Checked++
		_, err := store.Get(id)
		if !errors.Is(err, ErrCorruptChunk) {
			return err
		}
		problems[id] = err.Error()
		return store.Seam.Rename(p, p.Dir().MustJoin(id.String()+".bad"))
	})
	if err != nil {
		return r, err
	}
	refs, err := FindIndexes(root)
	if err != nil {
		return r, err
	}
	backups := map[ChunkID][]string{}
	for _, ref := range refs {
		ids, err := IndexChunks(ref.Path)
		if err != nil {
			return r, err
		}
		for _, id := range ids {
			if _, bad := problems[id]; !bad && !store.Has(id) {
				problems[id] = "missing"
				if hostio.Exists(store.ChunkPath(id).Dir().MustJoin(id.String() + ".bad")) {
					problems[id] = "damaged and moved aside; the next backup of this content writes it again"
				}
			}
			if _, bad := problems[id]; bad && !slices.Contains(backups[id], ref.String()) {
				backups[id] = append(backups[id], ref.String())
			}
		}
	}
	for id, why := range problems {
		r.Bad = append(r.Bad, BadChunk{ID: id, Problem: why, Backups: backups[id]})
	}
	sort.Slice(r.Bad, func(i, j int) bool { return r.Bad[i].ID.String() < r.Bad[j].ID.String() })
	return r, nil
}
