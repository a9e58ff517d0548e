package format

import (
	"fmt"
	"io"
	"sort"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// Checking a backup in chunks storage without rebuilding it: its indexes
// are read (their checksum proves them whole) and the chunks they name are
// looked up in the store, not read; verify reads chunks.

// StoredSize is the size of chunk id's file, and whether the store holds it
// (a regular file with at least a chunk's header, as Has).
func (s *ChunkStore) StoredSize(id ChunkID) (int64, bool) {
	fi, err := hostio.Lstat(s.ChunkPath(id))
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < chunkHeader {
		return 0, false
	}
	return fi.Size(), true
}

// StoredChunks looks the chunks ids names up in the store (holes skipped,
// each once): the size of every chunk file found, and the chunks the store
// lacks, in order of their names.
func (s *ChunkStore) StoredChunks(ids []ChunkID) (map[ChunkID]int64, []ChunkID) {
	sizes := map[ChunkID]int64{}
	lacking := map[ChunkID]bool{}
	for _, id := range ids {
		if id.IsHole() || lacking[id] {
			continue
		}
		if _, ok := sizes[id]; ok {
			continue
		}
		if n, ok := s.StoredSize(id); ok {
			sizes[id] = n
		} else {
			lacking[id] = true
		}
	}
	missing := make([]ChunkID, 0, len(lacking))
	for id := range lacking {
		missing = append(missing, id)
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i].String() < missing[j].String() })
	return sizes, missing
}

// IDs are the chunks of the file index, in order.
func (x FileIndex) IDs() []ChunkID {
	ids := make([]ChunkID, len(x.Chunks))
	for i, c := range x.Chunks {
		ids[i] = c.ID
	}
	return ids
}

// ReadStoredState is ReadState of the state file the index x describes,
// read from the store: only the chunks holding its header and the start of
// QEMU's stream are read (and checked against their names).
func ReadStoredState(store *ChunkStore, x FileIndex) (StateKind, error) {
	return readState(&storedFile{store: store, x: x}, x.Size)
}

// storedFile reads a file of the store through its index, a chunk at a time.
type storedFile struct {
	store *ChunkStore
	x     FileIndex
	at    int64 // the offset of data, the chunk read last
	data  []byte
}

func (f *storedFile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	var start int64
	for i := 0; i < len(f.x.Chunks) && n < len(p); i++ {
		c := f.x.Chunks[i]
		end := start + int64(c.Len)
		if pos := off + int64(n); pos < end {
			if f.data == nil || f.at != start {
				data, err := f.store.Get(c.ID)
				if err != nil {
					return n, err
				}
				if len(data) != int(c.Len) {
					return n, fmt.Errorf("chunk %d is %d bytes, the index says %d", i, len(data), c.Len)
				}
				f.at, f.data = start, data
			}
			n += copy(p[n:], f.data[pos-start:])
		}
		start = end
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
