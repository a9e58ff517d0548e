package format

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// Index lists the chunks of one disk of one iteration, in order: chunk i
// holds the bytes [i*ChunkSize, min((i+1)*ChunkSize, Size)) of the disk as
// the guest saw it. A hole (the zero ID) reads as zeros.
type Index struct {
	Format string // the image format to rebuild: qcow2 or raw
	Size   int64  // the disk's virtual size
	Chunks []ChunkID
}

// ErrCorruptIndex: an index file is torn or damaged.
var ErrCorruptIndex = errors.New("corrupt index")

// An index file is
//
//	"STNYIDX1" | uint32 chunk size | uint64 size | uint8 len + format name |
//	uint64 count | count × 32-byte chunk IDs | SHA-256 of all before
//
// big-endian; it is written last, so a backup with an index is complete.
var indexMagic = [8]byte{'S', 'T', 'N', 'Y', 'I', 'D', 'X', '1'}

// ChunkCount is the number of chunks of a disk of size bytes.
func ChunkCount(size int64) int { return int((size + ChunkSize - 1) / ChunkSize) }

// ChunkLen is the length of chunk i of a disk of size bytes.
func ChunkLen(size int64, i int) int {
	return int(min(ChunkSize, size-int64(i)*ChunkSize))
}

// Stored counts the index's chunks that are not holes.
func (x Index) Stored() int {
	n := 0
	for _, id := range x.Chunks {
		if !id.IsHole() {
			n++
		}
	}
	return n
}

// Equal: x and y describe the same disk content in the same format.
func (x Index) Equal(y Index) bool {
	return x.Format == y.Format && x.Size == y.Size && slices.Equal(x.Chunks, y.Chunks)
}

// MarshalBinary is the index file's content.
func (x Index) MarshalBinary() ([]byte, error) {
	if len(x.Format) > 255 || len(x.Chunks) != ChunkCount(x.Size) {
		return nil, fmt.Errorf("index of %d chunks for %d bytes, format %q", len(x.Chunks), x.Size, x.Format)
	}
	b := append([]byte(nil), indexMagic[:]...)
	b = binary.BigEndian.AppendUint32(b, ChunkSize)
	b = binary.BigEndian.AppendUint64(b, uint64(x.Size))
	b = append(b, byte(len(x.Format)))
	b = append(b, x.Format...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(x.Chunks)))
	for _, id := range x.Chunks {
		b = append(b, id[:]...)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// UnmarshalBinary reads an index file, refusing a torn or damaged one.
func (x *Index) UnmarshalBinary(b []byte) error {
	bad := func(why string) error { return fmt.Errorf("%w: %s", ErrCorruptIndex, why) }
	if len(b) < len(indexMagic)+4+8+1+8+sha256.Size || !bytes.Equal(b[:8], indexMagic[:]) {
		return bad("no index header")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return bad("checksum mismatch (torn or damaged)")
	}
	r := body[8:]
	if binary.BigEndian.Uint32(r) != ChunkSize {
		return bad(fmt.Sprintf("chunk size %d", binary.BigEndian.Uint32(r)))
	}
	size := int64(binary.BigEndian.Uint64(r[4:]))
	fl := int(r[12])
	r = r[13:]
	if size < 0 || len(r) < fl+8 {
		return bad("short header")
	}
	format := string(r[:fl])
	r = r[fl:]
	n := binary.BigEndian.Uint64(r)
	r = r[8:]
	if n != uint64(ChunkCount(size)) || uint64(len(r)) != n*sha256.Size {
		return bad(fmt.Sprintf("%d chunks for %d bytes in %d bytes", n, size, len(r)))
	}
	x.Format, x.Size, x.Chunks = format, size, make([]ChunkID, n)
	for i := range x.Chunks {
		copy(x.Chunks[i][:], r[i*sha256.Size:])
	}
	return nil
}

// WriteIndex writes an index (a disk's Index or a file's FileIndex) to p
// whole or not at all (temporary file, fsync, rename, fsync of the directory).
func WriteIndex(seam *hostio.Seam, p hostio.Path, x encoding.BinaryMarshaler, perm os.FileMode) error {
	b, err := x.MarshalBinary()
	if err != nil {
		return err
	}
	return seam.WriteFile(p, b, perm)
}

// ReadIndex reads and checks the index at p.
func ReadIndex(p hostio.Path) (Index, error) {
	var x Index
	err := readIndexFile(p, &x) // before x is returned
	return x, err
}

// readIndexFile reads the index file at p into x, checked.
func readIndexFile(p hostio.Path, x encoding.BinaryUnmarshaler) error {
	b, err := hostio.ReadFile(p)
	if err != nil {
		return err
	}
	if err := x.UnmarshalBinary(b); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
