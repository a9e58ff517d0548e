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
// data and only the node reads them: root's alone.
func (j *job) chunkStore() *format.ChunkStore {
	return &format.ChunkStore{Dir: j.layout.ChunkStorePath(), Seam: j.seam, Perm: 0o600}
}

// chunkTotals adds up what storing a retain's disks did.
type chunkTotals struct {
	format.ChunkStats
	logical int64 // the disks' virtual sizes
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
	return []string{
		fmt.Sprintf("retainLogicalBytes: %d", t.logical),
		fmt.Sprintf("retainChunks: %d read, %d reused, %d holes, %d new of %d", t.Read, t.Reused, t.Holes, t.Written, t.Chunks),
	}
}

// storeDisk puts the retained image from into the store and writes its
// index idx last, and returns the bytes it read. An index that is there
// and sound means an earlier run stored this disk: nothing is read again.
func (j *job) storeDisk(ctx context.Context, from, idx hostio.Path, perm os.FileMode, t *chunkTotals, progress Progress) (int64, error) {
	if x, err := format.ReadIndex(idx); err == nil {
		t.add(x, format.ChunkStats{Chunks: len(x.Chunks)})
		return 0, nil
	}
	if err := hostio.CheckPath(from); err != nil {
		return 0, fail(ldapschema.RCCannotCopyImage, err)
	}
	x, st, err := format.StoreImage(ctx, j.chunkStore(), from.String(), progress)
	if err != nil {
		return 0, fail(ldapschema.RCCannotCopyImage, err)
	}
	if err := format.WriteIndex(j.seam, idx, x, perm); err != nil {
		return 0, fail(ldapschema.RCCannotCopyImage, err)
	}
	j.log.WithField("disk", from.Base()).WithField("read", "full").WithField("chunks", st.Chunks).
		WithField("chunksRead", st.Read).WithField("chunksNew", st.Written).WithField("bytesNew", st.Bytes).
		Info("disk stored in chunks")
	t.add(x, st)
	return int64(st.Read) * format.ChunkSize, nil
}

// rebuildDisk writes the image of the index idx to to, unless to is already
// that image (an earlier run rebuilt it).
func (j *job) rebuildDisk(ctx context.Context, idx, to hostio.Path, perm os.FileMode) (int64, error) {
	x, err := format.ReadIndex(idx)
	if err != nil {
		return 0, fail(ldapschema.RCMissingFiles, err)
	}
	if hostio.IsRegular(to) {
		if got, _, err := format.StoreImage(ctx, nil, to.String(), nil); err == nil && got.Equal(x) {
			return 0, nil
		}
	}
	if err := format.RebuildImage(ctx, j.seam, j.chunkStore(), x, to, perm); err != nil {
		return 0, fail(ldapschema.RCCannotCopyStateToRetain, err)
	}
	return int64(x.Stored()) * format.ChunkSize, nil
}
