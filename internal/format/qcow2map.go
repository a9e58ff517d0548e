package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// A retain needs a disk's size and where in the file each cluster's data
// lies. For the qcow2 a retain meets (after its merge: no backing file, no
// encryption, no compressed clusters, no incompatible features) both are
// read here from the header and the L1 and L2 tables, as QEMU's
// docs/interop/qcow2.txt lays them out: the two qemu-img starts (info and
// map) were four fifths of an unchanged disk's retain. Any other image is
// left to qemu-img.

const (
	qcowL2Compressed = uint64(1) << 62
	qcowL2Zero       = uint64(1) << 0
	qcowOffsetMask   = 0x00fffffffffffe00
	maxL1Entries     = 32 << 20 // QEMU's own bound
)

// errNotPlainQcow2: qemu-img must read this image.
var errNotPlainQcow2 = errors.New("not a plain qcow2")

// plainQcow2Map returns the image at path and its map, as qemu-img info
// and map give them for a plain qcow2 v3, or errNotPlainQcow2.
func plainQcow2Map(path string) (Image, []extent, error) {
	f, err := os.Open(path)
	if err != nil {
		return Image{}, nil, err
	}
	defer f.Close()
	not := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", errNotPlainQcow2, path, fmt.Sprintf(format, a...))
	}
	be := binary.BigEndian
	hdr := make([]byte, qcowHeaderLen)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return Image{}, nil, not("header: %v", err)
	}
	clusterBits := be.Uint32(hdr[20:])
	switch {
	case string(hdr[:4]) != qcowMagic || be.Uint32(hdr[4:]) != 3:
		return Image{}, nil, not("not a qcow2 v3 image")
	case be.Uint64(hdr[8:]) != 0:
		return Image{}, nil, not("it has a backing file")
	case be.Uint32(hdr[32:]) != 0:
		return Image{}, nil, not("encrypted")
	case be.Uint64(hdr[72:]) != 0:
		return Image{}, nil, not("incompatible features %#x", be.Uint64(hdr[72:]))
	case clusterBits < 9 || clusterBits > 21:
		return Image{}, nil, not("cluster bits %d", clusterBits)
	}
	size := int64(be.Uint64(hdr[24:]))
	cluster := int64(1) << clusterBits
	perL2 := cluster / 8
	l1Size := int64(be.Uint32(hdr[36:]))
	if size < 0 {
		return Image{}, nil, not("size %d", size)
	}
	need := ceilDiv(size, perL2*cluster) // L1 entries the size needs
	if need > min(l1Size, maxL1Entries) {
		return Image{}, nil, not("an L1 table of %d entries for %d bytes", l1Size, size)
	}
	l1 := make([]byte, need*8)
	if _, err := f.ReadAt(l1, int64(be.Uint64(hdr[40:]))); err != nil {
		return Image{}, nil, not("L1 table: %v", err)
	}
	var es []extent
	// add appends n bytes at start, merged with the extent before when
	// they continue it (data contiguous in the file too), as qemu-img does.
	add := func(start, n int64, data bool, offset int64) {
		n = min(n, size-start)
		if k := len(es) - 1; k >= 0 && es[k].Data == data &&
			(!data || *es[k].Offset+es[k].Length == offset) {
			es[k].Length += n
			return
		}
		e := extent{Start: start, Length: n, Data: data, Zero: !data}
		if data {
			e.Offset = &offset
		}
		es = append(es, e)
	}
	l2 := make([]byte, cluster)
	for i := int64(0); i*perL2*cluster < size; i++ {
		start := i * perL2 * cluster
		l2Offset := be.Uint64(l1[i*8:]) & qcowOffsetMask
		if l2Offset == 0 {
			add(start, perL2*cluster, false, 0) // no backing file: zeros
			continue
		}
		if _, err := f.ReadAt(l2, int64(l2Offset)); err != nil {
			return Image{}, nil, not("L2 table %d: %v", i, err)
		}
		for j := int64(0); j < perL2 && start+j*cluster < size; j++ {
			entry := be.Uint64(l2[j*8:])
			host := entry & qcowOffsetMask
			switch {
			case entry&qcowL2Compressed != 0:
				return Image{}, nil, not("compressed clusters")
			case entry&qcowL2Zero != 0 || host == 0:
				add(start+j*cluster, cluster, false, 0)
			default:
				add(start+j*cluster, cluster, true, int64(host))
			}
		}
	}
	return Image{Filename: path, Format: "qcow2", VirtualSize: size}, es, nil
}
