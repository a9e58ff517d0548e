package format

import (
	"crypto/sha256"
	"encoding/json"
	"os/exec"
	"testing"
)

// A rebuilt qcow2 spanning several L2 tables and refcount blocks, with
// holes, zero clusters inside chunks and a short last chunk, is sound to
// qemu-img (no corruption, no leak), reads as the raw rebuild of the same
// index, and allocates only the clusters that hold data.
func TestRebuiltQcow2IsSoundAcrossTablesAndBlocks(t *testing.T) {
	ctx := t.Context()
	dir, s := tempStore(t)
	const n = 600                         // 600 chunks reserve 38400 clusters: two refcount blocks
	x := Index{Size: n*ChunkSize - 12288, // not a whole cluster (sizes are whole sectors)
		Format: "qcow2", Chunks: make([]ChunkID, n)}
	data := 0
	kinds := map[int]ChunkID{}
	for i := range n {
		if i%7 == 3 {
			continue // a hole
		}
		c := make([]byte, ChunkLen(x.Size, i))
		// One cluster of data somewhere in the chunk, the rest zeros; eight
		// kinds of chunk keep the test quick.
		at := (i % 8) * 7 * qcowCluster
		if i == n-1 {
			at = len(c) - 100
		}
		for k := at; k < min(at+qcowCluster, len(c)); k++ {
			c[k] = byte(i%8*31 + k)
		}
		kind := i % 8
		if i == n-1 {
			kind = -1
		}
		if id, ok := kinds[kind]; ok {
			x.Chunks[i] = id
		} else {
			x.Chunks[i] = sha256.Sum256(c)
			kinds[kind] = x.Chunks[i]
			if _, err := s.Put(x.Chunks[i], c); err != nil {
				t.Fatal(err)
			}
		}
		data++
	}
	if l := planQcow2(x); l.nRefBlocks != 2 || len(l.l2) != 5 {
		t.Fatalf("layout: %d refcount blocks, %d L2 tables", l.nRefBlocks, len(l.l2))
	}
	q, raw := dir.MustJoin("disk.qcow2"), dir.MustJoin("disk.raw")
	if err := RebuildImage(ctx, nil, s, x, q, 0o600); err != nil {
		t.Fatal(err)
	}
	y := x
	y.Format = "raw"
	if err := RebuildImage(ctx, nil, s, y, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "check", "--output=json", "-f", "qcow2", q.String()).Output()
	if err != nil {
		t.Fatalf("qemu-img check: %v: %s", err, out)
	}
	var c struct {
		Corruptions, Leaks int
		Allocated          int64 `json:"allocated-clusters"`
	}
	if err := json.Unmarshal(out, &c); err != nil || c.Corruptions != 0 || c.Leaks != 0 || c.Allocated != int64(data) {
		t.Fatalf("check: %+v (want %d data clusters) %v: %s", c, data, err, out)
	}
	if eq, err := CompareImages(ctx, q.String(), raw.String()); err != nil || !eq {
		out, _ := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", q.String(), raw.String()).CombinedOutput()
		t.Fatalf("qcow2 and raw rebuilds differ: %v %v %s", eq, err, out)
	}
}
