package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
)

// A retain of a disk that barely changed reads its dirty bitmap and little
// else. qemu-nbd and a map of its export took 0.1-0.2 s of process starts
// for that; the bitmap is a few KiB of the retained image (not open for
// writing by anyone then), read here as docs/interop/qcow2.txt of QEMU lays
// it out.

const (
	qcowMagic          = "QFI\xfb"
	qcowExtBitmaps     = 0x23852875
	qcowAutoclearBmaps = 1 << 0 // the bitmaps extension is consistent
	bitmapInUse        = 1 << 0
	bitmapTypeDirty    = 1
	bitmapEntryFixed   = 24
	bitmapOffsetMask   = 0x00fffffffffffe00
	maxBitmapDirectory = 64 << 20 // QEMU's own bound
	maxBitmapTable     = 64 << 20
)

// ErrBitmapUnusable: the image has no consistent bitmap of that name.
var ErrBitmapUnusable = errors.New("dirty bitmap unusable")

// qcow2DirtyChunks marks the chunks of a disk of size bytes in which the
// persistent bitmap name of the qcow2 at path records a write.
func qcow2DirtyChunks(path, name string, size int64) ([]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	unusable := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s in %s: %s", ErrBitmapUnusable, name, path, fmt.Sprintf(format, a...))
	}
	be := binary.BigEndian
	hdr := make([]byte, 4096)
	if _, err := io.ReadFull(f, hdr[:104]); err != nil {
		return nil, unusable("header: %v", err)
	}
	if string(hdr[:4]) != qcowMagic || be.Uint32(hdr[4:]) < 3 {
		return nil, unusable("not a qcow2 v3 image")
	}
	clusterBits := be.Uint32(hdr[20:])
	if clusterBits < 9 || clusterBits > 21 {
		return nil, unusable("cluster bits %d", clusterBits)
	}
	cluster := int64(1) << clusterBits
	if be.Uint64(hdr[88:])&qcowAutoclearBmaps == 0 {
		return nil, unusable("the image's bitmaps were left inconsistent")
	}
	// Header extensions follow the header, within its first cluster.
	n, _ := f.ReadAt(hdr[:min(cluster, int64(len(hdr)))], 0)
	ext := hdr[:n]
	var dirSize, dirOffset uint64
	for off := int(be.Uint32(hdr[100:])); off+8 <= len(ext); {
		typ, l := be.Uint32(ext[off:]), int(be.Uint32(ext[off+4:]))
		if typ == 0 {
			break
		}
		if off+8+l > len(ext) {
			return nil, unusable("header extension beyond the header")
		}
		if typ == qcowExtBitmaps && l >= 24 {
			dirSize, dirOffset = be.Uint64(ext[off+16:]), be.Uint64(ext[off+24:])
		}
		off += 8 + (l+7)&^7
	}
	if dirSize == 0 || dirSize > maxBitmapDirectory {
		return nil, unusable("no bitmap directory")
	}
	dir := make([]byte, dirSize)
	if _, err := f.ReadAt(dir, int64(dirOffset)); err != nil {
		return nil, unusable("directory: %v", err)
	}
	for off := 0; off+bitmapEntryFixed <= len(dir); {
		tableOffset, tableSize := be.Uint64(dir[off:]), be.Uint32(dir[off+8:])
		flags, typ, granBits := be.Uint32(dir[off+12:]), dir[off+16], dir[off+17]
		nameSize, extra := int(be.Uint16(dir[off+18:])), int(be.Uint32(dir[off+20:]))
		end := off + bitmapEntryFixed + extra + nameSize
		if end > len(dir) {
			return nil, unusable("directory entry beyond the directory")
		}
		if string(dir[off+bitmapEntryFixed+extra:end]) != name {
			off = (end + 7) &^ 7
			continue
		}
		switch {
		case flags&bitmapInUse != 0:
			return nil, unusable("in use (its QEMU did not stop cleanly)")
		case typ != bitmapTypeDirty || granBits < 9 || granBits > 31:
			return nil, unusable("type %d, granularity 2^%d", typ, granBits)
		case int64(tableSize)*8 > maxBitmapTable:
			return nil, unusable("table of %d entries", tableSize)
		}
		return readBitmapTable(f, tableOffset, tableSize, cluster, int64(1)<<granBits, size, unusable)
	}
	return nil, unusable("not in the image")
}

// readBitmapTable turns a bitmap's table and data clusters into dirty
// chunks: bit j of byte i of the bitmap (least significant first) stands
// for granule i*8+j.
func readBitmapTable(f *os.File, tableOffset uint64, tableSize uint32, cluster, gran, size int64,
	unusable func(string, ...any) error) ([]bool, error) {
	be := binary.BigEndian
	table := make([]byte, int64(tableSize)*8)
	if _, err := f.ReadAt(table, int64(tableOffset)); err != nil {
		return nil, unusable("table: %v", err)
	}
	bitsPerCluster := cluster * 8
	granules := (size + gran - 1) / gran
	if need := (granules + bitsPerCluster - 1) / bitsPerCluster; int64(tableSize) < need {
		return nil, unusable("table of %d entries for %d granules", tableSize, granules)
	}
	dirty := make([]bool, ChunkCount(size))
	mark := func(g int64) {
		start, end := g*gran, min((g+1)*gran, size)
		for c := start / ChunkSize; c*ChunkSize < end; c++ {
			dirty[c] = true
		}
	}
	data := make([]byte, cluster)
	for k := int64(0); k < int64(tableSize); k++ {
		first := k * bitsPerCluster
		if first >= granules {
			break
		}
		entry := be.Uint64(table[k*8:])
		off := entry & bitmapOffsetMask
		if off == 0 {
			if entry&1 != 0 { // all set
				for g := first; g < min(first+bitsPerCluster, granules); g++ {
					mark(g)
				}
			}
			continue
		}
		if _, err := f.ReadAt(data, int64(off)); err != nil {
			return nil, unusable("data cluster: %v", err)
		}
		for i, b := range data {
			for ; b != 0; b &= b - 1 {
				if g := first + int64(i)*8 + int64(bits.TrailingZeros8(b)); g < granules {
					mark(g)
				}
			}
		}
	}
	return dirty, nil
}
