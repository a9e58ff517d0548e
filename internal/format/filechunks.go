package format

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/restic/chunker"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// A plain file (the saved state: the guest's RAM) goes into the store in
// content-defined chunks (restic's Rabin chunker, 512 KiB to 8 MiB, about
// 1 MiB on average): a page that moved within the file moves the cut
// points with it, so the same RAM night after night finds the same chunks.

// chunkerPol is the Rabin polynomial of every store: fixed, so that equal
// content cuts the same way in every backup root.
const chunkerPol = chunker.Pol(0x3DA3358B4DC173)

// FileIndex lists the chunks of a plain file, in order.
type FileIndex struct {
	Size   int64
	Chunks []FileChunk
}

// FileChunk is one content-defined chunk of a file.
type FileChunk struct {
	ID  ChunkID
	Len uint32
}

// A file index is "STNYFIX1" | uint64 size | uint64 count |
// count × (32-byte ID, uint32 length) | SHA-256 of all before; big-endian.
var fileIndexMagic = [8]byte{'S', 'T', 'N', 'Y', 'F', 'I', 'X', '1'}

// MarshalBinary is the file index's content.
func (x FileIndex) MarshalBinary() ([]byte, error) {
	var sum int64
	b := append([]byte(nil), fileIndexMagic[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(x.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(len(x.Chunks)))
	for _, c := range x.Chunks {
		b = append(b, c.ID[:]...)
		b = binary.BigEndian.AppendUint32(b, c.Len)
		sum += int64(c.Len)
	}
	if sum != x.Size {
		return nil, fmt.Errorf("file index of %d bytes in chunks of %d", x.Size, sum)
	}
	s := sha256.Sum256(b)
	return append(b, s[:]...), nil
}

// UnmarshalBinary reads a file index, refusing a torn or damaged one.
func (x *FileIndex) UnmarshalBinary(b []byte) error {
	bad := func(why string) error { return fmt.Errorf("%w: %s", ErrCorruptIndex, why) }
	if len(b) < 8+16+sha256.Size || !bytes.Equal(b[:8], fileIndexMagic[:]) {
		return bad("no file index header")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return bad("checksum mismatch (torn or damaged)")
	}
	size, n := int64(binary.BigEndian.Uint64(body[8:])), binary.BigEndian.Uint64(body[16:])
	r := body[24:]
	if uint64(len(r)) != n*(sha256.Size+4) {
		return bad(fmt.Sprintf("%d chunks in %d bytes", n, len(r)))
	}
	x.Size, x.Chunks = size, make([]FileChunk, n)
	var total int64
	for i := range x.Chunks {
		copy(x.Chunks[i].ID[:], r)
		x.Chunks[i].Len = binary.BigEndian.Uint32(r[sha256.Size:])
		total += int64(x.Chunks[i].Len)
		r = r[sha256.Size+4:]
	}
	if total != size {
		return bad(fmt.Sprintf("chunks of %d bytes for a file of %d", total, size))
	}
	return nil
}

// ReadFileIndex reads and checks the file index at p.
func ReadFileIndex(p hostio.Path) (FileIndex, error) {
	var x FileIndex
	err := readIndexFile(p, &x) // before x is returned
	return x, err
}

// StoreFile puts the file at src into the store in content-defined chunks
// and returns its index (to be written by the caller; the store is synced).
func StoreFile(ctx context.Context, store *ChunkStore, src hostio.Path) (FileIndex, ChunkStats, error) {
	var x FileIndex
	var st ChunkStats
	f, err := hostio.Open(src)
	if err != nil {
		return x, st, err
	}
	defer f.Close()
	c := chunker.New(f, chunkerPol)
	buf := make([]byte, chunker.MaxSize)
	for {
		if err := ctx.Err(); err != nil {
			return x, st, err
		}
		ch, err := c.Next(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return x, st, fmt.Errorf("read %s: %w", src, err)
		}
		id := ChunkID(sha256.Sum256(ch.Data))
		wrote, err := store.Put(id, ch.Data)
		if err != nil {
			return x, st, err
		}
		st.Chunks++
		st.Read++
		if wrote {
			st.Written++
			if fi, err := hostio.Lstat(store.ChunkPath(id)); err == nil {
				st.Bytes += fi.Size()
			}
		}
		x.Chunks = append(x.Chunks, FileChunk{ID: id, Len: uint32(ch.Length)})
		x.Size += int64(ch.Length)
	}
	return x, st, store.Sync()
}

// RebuildFile writes the file of index x to dst whole or not at all
// (temporary file, fsync, rename, fsync of the directory); every chunk is
// checked against its name as it is read.
func RebuildFile(ctx context.Context, seam *hostio.Seam, store *ChunkStore, x FileIndex, dst hostio.Path, perm os.FileMode) error {
	tmp := dst.Dir().MustJoin(dst.Base() + ".partial")
	err := writeWhole(seam, tmp, dst, perm, func(f *os.File) error {
		var off int64
		for i, c := range x.Chunks {
			if err := ctx.Err(); err != nil {
				return err
			}
			data, err := store.Get(c.ID)
			if err != nil {
				return err
			}
			if len(data) != int(c.Len) {
				return fmt.Errorf("chunk %d is %d bytes, the index says %d", i, len(data), c.Len)
			}
			if err := seam.Write(f, data, off); err != nil {
				return err
			}
			off += int64(len(data))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return seam.SyncDir(dst.Dir())
}

// IndexChunks reads an index file of either kind (a disk's or a plain
// file's) and returns the chunks it names, holes left out.
func IndexChunks(p hostio.Path) ([]ChunkID, error) {
	b, err := hostio.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var ids []ChunkID
	if bytes.HasPrefix(b, fileIndexMagic[:]) {
		var x FileIndex
		if err := x.UnmarshalBinary(b); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		for _, c := range x.Chunks {
			ids = append(ids, c.ID)
		}
		return ids, nil
	}
	var x Index
	if err := x.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	for _, id := range x.Chunks {
		if !id.IsHole() {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
