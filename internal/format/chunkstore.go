package format

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// ChunkSize is the size of every chunk of a disk but its last.
const ChunkSize = 4 << 20

// maxChunkLen bounds any chunk: a disk's, or a plain file's content-defined
// one (at most 8 MiB).
const maxChunkLen = 8 << 20

// ChunkID names a chunk: the SHA-256 of its uncompressed content.
type ChunkID [sha256.Size]byte

// zeroID marks a hole in an index: a chunk that reads as zeros and is not stored.
var zeroID ChunkID

func (id ChunkID) String() string { return hex.EncodeToString(id[:]) }

// ParseChunkID reads a chunk's file name.
func ParseChunkID(s string) (ChunkID, bool) {
	var id ChunkID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) || hex.EncodeToString(b) != s {
		return id, false
	}
	copy(id[:], b)
	return id, !id.IsHole()
}

// IsHole: the index entry stands for zeros.
func (id ChunkID) IsHole() bool { return id == zeroID }

// ErrCorruptChunk: a stored chunk does not hold what its name says.
var ErrCorruptChunk = errors.New("corrupt chunk")

// A chunk file is
//
//	"STNYCHK1" | uint32 content length | uint32 CRC-32C of the payload | zstd payload
//
// big-endian. The CRC finds a damaged file without decompressing it; the
// SHA-256 of the decompressed content against the name proves it is the
// chunk the indexes mean.
var chunkMagic = [8]byte{'S', 'T', 'N', 'Y', 'C', 'H', 'K', '1'}

const chunkHeader = 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	encOnce sync.Once
	enc     *zstd.Encoder
	dec     *zstd.Decoder
)

func codec() (*zstd.Encoder, *zstd.Decoder) {
	encOnce.Do(func() {
		// Both are safe for concurrent EncodeAll/DecodeAll.
		enc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		dec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(2*maxChunkLen))
	})
	return enc, dec
}

// encodeChunk is the file content of a chunk.
func encodeChunk(data []byte) []byte {
	e, _ := codec()
	out := make([]byte, chunkHeader, chunkHeader+len(data)+len(data)/128+64) // room for incompressible data
	copy(out, chunkMagic[:])
	out = e.EncodeAll(data, out)
	binary.BigEndian.PutUint32(out[8:], uint32(len(data)))
	binary.BigEndian.PutUint32(out[12:], crc32.Checksum(out[chunkHeader:], castagnoli))
	return out
}

// decodeChunk checks a chunk file's content against id and returns the
// chunk, in dst's storage when it has room.
func decodeChunk(id ChunkID, b, dst []byte) ([]byte, error) {
	if len(b) < chunkHeader || !bytes.Equal(b[:8], chunkMagic[:]) {
		return nil, fmt.Errorf("%w %s: no chunk header", ErrCorruptChunk, id)
	}
	n := binary.BigEndian.Uint32(b[8:])
	if crc32.Checksum(b[chunkHeader:], castagnoli) != binary.BigEndian.Uint32(b[12:]) {
		return nil, fmt.Errorf("%w %s: checksum mismatch", ErrCorruptChunk, id)
	}
	if n > maxChunkLen {
		return nil, fmt.Errorf("%w %s: length %d", ErrCorruptChunk, id, n)
	}
	_, d := codec()
	data, err := d.DecodeAll(b[chunkHeader:], dst[:0])
	if err != nil || len(data) != int(n) {
		return nil, fmt.Errorf("%w %s: does not decompress to %d bytes: %v", ErrCorruptChunk, id, n, err)
	}
	if sha256.Sum256(data) != id {
		return nil, fmt.Errorf("%w %s: content has another hash", ErrCorruptChunk, id)
	}
	return data, nil
}

// ChunkStore holds the chunks of every disk backed up to one backup root,
// each once: <store>/<first 4 hex digits>/<64 hex digits>. Every write
// passes the seam, so a crash test can stop at each.
type ChunkStore struct {
	Dir  hostio.Path
	Seam *hostio.Seam
	// Perm is the mode of the chunk files (default 0600).
	Perm os.FileMode

	tmpSeq  atomic.Int64
	mu      sync.Mutex
	touched map[string]bool // prefix directories with new entries, for Sync
}

func (s *ChunkStore) prefix(id ChunkID) string { return id.String()[:4] }

// ChunkPath is where the chunk id is stored.
func (s *ChunkStore) ChunkPath(id ChunkID) hostio.Path {
	return s.Dir.MustJoin(s.prefix(id), id.String())
}

// Has: the store holds a chunk file named id (not read: verify checks content).
func (s *ChunkStore) Has(id ChunkID) bool {
	_, ok := s.StoredSize(id)
	return ok
}

// Put stores data as chunk id unless the store has it; it reports whether
// it wrote. The file is written under a temporary name, fsynced and renamed,
// so a chunk file is whole or absent; Sync makes the renames durable, of a
// chunk found in the store too: its writer may have failed or been killed
// between its rename and its Sync.
func (s *ChunkStore) Put(id ChunkID, data []byte) (bool, error) {
	if s.Has(id) {
		// A garbage collection running now must keep it (see Touch).
		if err := s.Touch(id); err != nil {
			return false, err
		}
		s.dirty(id)
		return false, nil
	}
	perm := s.Perm
	if perm == 0 {
		perm = 0o600
	}
	dir := s.Dir.MustJoin(s.prefix(id))
	if _, err := s.Seam.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	// Unique per writer: two retains may store the same chunk at once.
	tmp := dir.MustJoin(id.String() + "." + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(s.tmpSeq.Add(1), 10) + ".tmp")
	err := writeWhole(s.Seam, tmp, s.ChunkPath(id), perm, func(f *os.File) error {
		return s.Seam.Write(f, encodeChunk(data), 0)
	})
	if err != nil {
		return false, err
	}
	s.dirty(id)
	return true, nil
}

// dirty marks chunk id's directory for the next Sync.
func (s *ChunkStore) dirty(id ChunkID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.touched == nil {
		s.touched = map[string]bool{}
	}
	s.touched[s.prefix(id)] = true
}

// Sync makes the chunks Put since the last Sync durable: an index must not
// be written before the chunks it names.
func (s *ChunkStore) Sync() error {
	s.mu.Lock()
	dirs := s.touched
	s.touched = nil
	s.mu.Unlock()
	for p := range dirs {
		if err := s.Seam.SyncDir(s.Dir.MustJoin(p)); err != nil {
			return err
		}
	}
	if len(dirs) > 0 {
		return s.Seam.SyncDir(s.Dir)
	}
	return nil
}

// Get reads chunk id, checked against its checksum and its name.
func (s *ChunkStore) Get(id ChunkID) ([]byte, error) { return s.GetInto(id, nil) }

// fileBufs hold chunk files while they are decoded: a restore reads
// thousands, and fresh buffers for each cost more than the decoding.
var fileBufs = sync.Pool{New: func() any { return []byte(nil) }}

// GetInto is Get into dst's storage when it has room (a buffer to reuse).
func (s *ChunkStore) GetInto(id ChunkID, dst []byte) ([]byte, error) {
	f, err := hostio.Open(s.ChunkPath(id))
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := fileBufs.Get().([]byte)
	defer func() { fileBufs.Put(b[:0]) }()
	if int64(cap(b)) < fi.Size() {
		b = make([]byte, fi.Size())
	}
	b = b[:fi.Size()]
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, fi.Size()), b); err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id, err)
	}
	return decodeChunk(id, b, dst)
}

// writeWhole writes dst through tmp: created, filled by write, fsynced and
// renamed; a failure removes tmp. The caller makes the rename durable.
func writeWhole(seam *hostio.Seam, tmp, dst hostio.Path, perm os.FileMode, write func(*os.File) error) error {
	var plain *hostio.Seam // cleaning up is no point of its own
	f, err := seam.Create(tmp, perm)
	if err != nil {
		return err
	}
	err = write(f)
	if err == nil {
		err = seam.Sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = seam.Rename(tmp, dst)
	}
	if err != nil {
		_ = plain.Remove(tmp)
	}
	return err
}
