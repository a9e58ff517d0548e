package node

import (
	"context"
	"fmt"
	"os"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// In chunks storage a disk's iteration is an index in the backup directory
// and the chunks it names in the backup root's store (internal/format); the
// state file, XML and LDIF stay plain files.

// chunkStore is the store of the job's backup root. Its files hold guest
// data and only the node reads them: root's alone (the store's default).
func (j *job) chunkStore() *format.ChunkStore { return j.layout.ChunkStore(j.seam) }

// chunkTotals adds up what storing a retain's disks did.
type chunkTotals struct {
	format.ChunkStats
	logical int64    // the disks' virtual sizes and the state file's size
	how     []string // per disk: read whole or by bitmap, and why
}

func (t *chunkTotals) add(x format.Index, s format.ChunkStats) {
	t.logical += x.Size
	t.Chunks += s.Chunks
	t.Holes += s.Holes
	t.Read += s.Read
	t.Reused += s.Reused
	t.Written += s.Written
	t.Bytes += s.Bytes
}

// times are the retain's words on its chunks in the leaf's execution times.
func (t chunkTotals) times() []string {
	return append([]string{
		fmt.Sprintf("retainLogicalBytes: %d", t.logical),
		fmt.Sprintf("retainChunks: %d read, %d reused, %d holes, %d new of %d", t.Read, t.Reused, t.Holes, t.Written, t.Chunks),
	}, t.how...)
}

// storeDisk puts the retained image from into the store and writes its
// index idx last, and returns the bytes it read and how (for the leaf's
// execution times). An index that is there and sound means an earlier run
// stored this disk: nothing is read again.
//
// With a usable dirty bitmap of ours and the index of the leaf it is named
// after, only the chunks the bitmap marks are read; without (first backup,
// a bitmap left in use by a killed QEMU, a new or resized disk, a restored
// VM, a raw disk), or when that fails, the whole disk is.
func (j *job) storeDisk(ctx context.Context, from, idx hostio.Path, perm os.FileMode, t *chunkTotals, progress Progress) (int64, string, error) {
	if x, err := format.ReadIndex(idx); err == nil {
		t.add(x, format.ChunkStats{Chunks: len(x.Chunks)})
		return 0, "stored before", nil
	}
	if err := hostio.CheckPath(from); err != nil {
		return 0, "", fail(ldapschema.RCCannotCopyImage, err)
	}
	log := j.log.WithField("disk", from.Base())
	o := format.StoreOptions{Progress: progress}
	var how string
	if since, bitmap, why := j.previous(ctx, from); since != nil {
		o.Since, o.Bitmap = since, bitmap
		how = "bitmap " + bitmap
	} else {
		how = "full: " + why
	}
	x, st, err := format.StoreImage(ctx, j.chunkStore(), from.String(), o)
	if err != nil && o.Since != nil && ctx.Err() == nil {
		log.WithError(err).Warn("reading only what the bitmap marks failed; reading the whole disk")
		how = "full: " + err.Error()
		o.Since, o.Bitmap = nil, ""
		x, st, err = format.StoreImage(ctx, j.chunkStore(), from.String(), o)
	}
	if err != nil {
		return 0, "", fail(ldapschema.RCCannotCopyImage, err)
	}
	if err := format.WriteIndex(j.seam, idx, x, perm); err != nil {
		return 0, "", fail(ldapschema.RCCannotCopyImage, err)
	}
	log.WithField("read", how).WithField("chunks", st.Chunks).WithField("chunksRead", st.Read).
		WithField("chunksReused", st.Reused).WithField("chunksNew", st.Written).WithField("bytesNew", st.Bytes).
		Info("disk stored in chunks")
	t.add(x, st)
	return int64(st.Read) * format.ChunkSize, how, nil
}

// previous finds, for the retained image at from, the newest of our dirty
// bitmaps that QEMU stored cleanly and whose leaf left an index of this
// disk; or says why there is none.
func (j *job) previous(ctx context.Context, from hostio.Path) (*format.Index, string, string) {
	im, err := format.ImageInfo(ctx, from.String())
	if err != nil {
		return nil, "", err.Error()
	}
	why := "no dirty bitmap"
	best := ""
	for _, b := range im.Bitmaps {
		leaf, ours := format.BitmapLeaf(b.Name)
		switch {
		case !ours || leaf >= j.leaf.Name || leaf <= best:
		case b.InUse:
			why = "bitmap " + b.Name + " in use (its QEMU did not stop cleanly)"
		case !b.Auto:
			why = "bitmap " + b.Name + " disabled"
		default:
			best = leaf
		}
	}
	if best == "" {
		return nil, "", why
	}
	l := j.layout
	l.Leaf = best
	x, err := format.ReadIndex(l.BackupIndex(from.Base()))
	if err != nil {
		return nil, "", fmt.Sprintf("no index of %s: %v", best, err)
	}
	if x.Size != im.VirtualSize {
		return nil, "", fmt.Sprintf("disk resized since %s", best)
	}
	return &x, format.BitmapName(best), ""
}

// storeState puts the saved state from into the store in content-defined
// chunks and writes its index idx last (see storeDisk).
func (j *job) storeState(ctx context.Context, from, idx hostio.Path, perm os.FileMode, t *chunkTotals) error {
	if x, err := format.ReadFileIndex(idx); err == nil {
		t.logical += x.Size
		return nil
	}
	x, st, err := format.StoreFile(ctx, j.chunkStore(), from)
	if err != nil {
		return fail(ldapschema.RCCannotCopyToBackup, err)
	}
	if err := format.WriteIndex(j.seam, idx, x, perm); err != nil {
		return fail(ldapschema.RCCannotCopyToBackup, err)
	}
	j.log.WithField("chunks", st.Chunks).WithField("chunksNew", st.Written).WithField("bytesNew", st.Bytes).
		Info("state stored in chunks")
	t.logical += x.Size
	t.Bytes += st.Bytes
	return nil
}

// rebuildDisk writes the image of the index idx to to, unless to is already
// that image (an earlier run rebuilt it).
func (j *job) rebuildDisk(ctx context.Context, idx, to hostio.Path, perm os.FileMode) (int64, error) {
	x, err := format.ReadIndex(idx)
	if err != nil {
		return 0, fail(ldapschema.RCMissingFiles, err)
	}
	if hostio.IsRegular(to) {
		if got, _, err := format.StoreImage(ctx, nil, to.String(), format.StoreOptions{}); err == nil && got.Equal(x) {
			return 0, nil
		}
	}
	if err := format.RebuildImage(ctx, j.seam, j.chunkStore(), x, to, perm); err != nil {
		return 0, fail(ldapschema.RCCannotCopyStateToRetain, err)
	}
	return int64(x.Stored()) * format.ChunkSize, nil
}

// rebuildState writes the saved state of the file index idx to to.
func (j *job) rebuildState(ctx context.Context, idx, to hostio.Path, perm os.FileMode) (int64, error) {
	x, err := format.ReadFileIndex(idx)
	if err != nil {
		return 0, fail(ldapschema.RCMissingFiles, err)
	}
	if err := format.RebuildFile(ctx, j.seam, j.chunkStore(), x, to, perm); err != nil {
		return 0, fail(ldapschema.RCCannotCopyStateToRetain, err)
	}
	return x.Size, nil
}
