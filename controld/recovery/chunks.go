package recovery

import (
	"fmt"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// An iteration in chunks storage keeps an index per disk and one of its
// saved state in its directory, and their chunks in the root's store
// (internal/format). Its XML and LDIF are plain files, read as in full
// storage.

// readStateIndex checks the saved state's index p (named n) and reads the
// state's header back from its chunks.
func (it *Iteration) readStateIndex(store *format.ChunkStore, p hostio.Path, n string) {
	x, err := format.ReadFileIndex(p)
	if err != nil {
		it.problem("%s: %v", n, err)
		return
	}
	it.LogicalBytes += x.Size
	if !it.storedChunks(store, n, x.IDs()) {
		return
	}
	kind, err := format.ReadStoredState(store, x)
	if err != nil {
		it.problem("%s: %v", n, err)
	}
	it.State = string(kind)
}

// readDiskIndex checks the disk index p (what names it) and returns the
// disk's virtual size. The image it rebuilds must be of the format the XML
// names (imageFormat, "" for any).
func (it *Iteration) readDiskIndex(store *format.ChunkStore, p hostio.Path, what, imageFormat string) int64 {
	x, err := format.ReadIndex(p)
	if err != nil {
		it.problem("%s: %v", what, err)
		return 0
	}
	if imageFormat != "" && x.Format != imageFormat {
		it.problem("%s: the index rebuilds a %s image, the XML names %s", what, x.Format, imageFormat)
	}
	it.LogicalBytes += x.Size
	it.storedChunks(store, what, x.Chunks)
	return x.Size
}

// storedChunks looks the chunks of one index (what names it) up in the
// store and reports whether all are there.
func (it *Iteration) storedChunks(store *format.ChunkStore, what string, ids []format.ChunkID) bool {
	sizes, missing := store.StoredChunks(ids)
	if len(missing) > 0 {
		it.problem("%s: %d of its %d chunks missing from the store %s (first %s)",
			what, len(missing), len(sizes)+len(missing), store.Dir, missing[0])
	}
	if it.chunks == nil {
		it.chunks = map[format.ChunkID]int64{}
	}
	for id, n := range sizes {
		it.chunks[id] = n
	}
	return len(missing) == 0
}

// addNewChunks adds to each iteration's Bytes the chunks no earlier
// iteration of its VM in its root names: the node reports as retainBytes
// what a retain added to the store, and which chunks those were is not
// written down. its is sorted by VM and leaf.
func addNewChunks(its []*Iteration) {
	seen := map[string]map[format.ChunkID]bool{} // by root and VM
	for _, it := range its {
		if len(it.chunks) == 0 {
			continue
		}
		k := it.Root + "\x00" + it.VM
		if seen[k] == nil {
			seen[k] = map[format.ChunkID]bool{}
		}
		for id, n := range it.chunks {
			if !seen[k][id] {
				seen[k][id] = true
				it.Bytes += n
			}
		}
	}
}

// chunkTimes are the execution times a recovered leaf in chunks storage
// gets besides retainBytes.
func (it *Iteration) chunkTimes() []string {
	if it.LogicalBytes == 0 {
		return nil
	}
	return []string{fmt.Sprintf("retainLogicalBytes: %d", it.LogicalBytes)}
}
