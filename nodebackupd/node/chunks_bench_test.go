package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// BenchmarkChunks measures chunks storage against today's full copy, on one
// 2 GiB qcow2 holding 1 GiB of incompressible data, in one run:
//
//   - unchanged-retain-ratio: a retain of the unchanged disk with a valid
//     bitmap / the full copy of it (goal at most 0.05);
//   - fullread-ratio: a retain reading the whole disk (no bitmap, chunks
//     already stored) / the full copy (goal at most 1.1);
//   - restore-ratio: cp --sparse=always of the image / rebuilding it from
//     the store (goal at least 0.8); restore-durable-ratio: the same with
//     the copy synced, as the rebuild is;
//   - store-7-nights-1pct: bytes stored for 7 nights with 1 % of the chunks
//     changed each night / the bytes of one full copy (goal at most 1.15).
func BenchmarkChunks(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	makeBenchDisk(b, dir, img)
	root := hostio.In(dir)
	var unchanged, fullread, restore, durable, nights []float64
	// One night after another, over all iterations: bitmaps are per leaf.
	leaf := time.Date(2024, 1, 1, 3, 0, 0, 0, time.UTC)
	for i := 0; i < b.N; i++ {
		store := &format.ChunkStore{Dir: root.MustJoin(fmt.Sprintf("store-%d", i))}
		copyTime, copied := timed(b, func() int64 {
			n, err := CopyFile(ctx, nil, root.MustJoin("disk.qcow2"), root.MustJoin("copy.qcow2"), 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			return n
		})
		first, st, err := format.StoreImage(ctx, store, img, format.StoreOptions{})
		if err != nil {
			b.Fatal(err)
		}
		stored := st.Bytes
		fullTime, _ := timed(b, func() int64 {
			if _, _, err := format.StoreImage(ctx, store, img, format.StoreOptions{}); err != nil {
				b.Fatal(err)
			}
			return 0
		})
		fullread = append(fullread, fullTime.Seconds()/copyTime.Seconds())

		bitmap := func() string {
			name := format.BitmapName(leaf.Format("20060102T150405Z"))
			leaf = leaf.Add(24 * time.Hour)
			run(b, "qemu-img", "bitmap", "--add", img, name)
			return name
		}
		o := format.StoreOptions{Since: &first, Bitmap: bitmap()}
		bmTime, _ := timed(b, func() int64 {
			if _, _, err := format.StoreImage(ctx, store, img, o); err != nil {
				b.Fatal(err)
			}
			return 0
		})
		unchanged = append(unchanged, bmTime.Seconds()/copyTime.Seconds())

		// Each writes 1 GiB into the page cache. This VM's host backs its
		// memory at first touch and takes freed pages back after a while,
		// so one such write can take several times another: the best of
		// three turns of each, the other's output removed before each.
		os.Remove(filepath.Join(dir, "copy.qcow2"))
		cpTime, syncTime, rebuildTime := time.Duration(1<<62), time.Duration(0), time.Duration(1<<62)
		for range 3 {
			t, _ := timed(b, func() int64 {
				run(b, "cp", "--sparse=always", img, filepath.Join(dir, "cp.qcow2"))
				return 0
			})
			// A restore must be durable; cp is not until its copy is synced.
			start := time.Now() // not timed(): its sync would do the work
			run(b, "sync", filepath.Join(dir, "cp.qcow2"))
			if s := time.Since(start); t+s < cpTime+syncTime || syncTime == 0 {
				cpTime, syncTime = t, s
			}
			os.Remove(filepath.Join(dir, "cp.qcow2"))
			t, _ = timed(b, func() int64 {
				if err := format.RebuildImage(ctx, nil, store, first, root.MustJoin("rebuilt.qcow2"), 0o600); err != nil {
					b.Fatal(err)
				}
				return 0
			})
			rebuildTime = min(rebuildTime, t)
			os.Remove(filepath.Join(dir, "rebuilt.qcow2"))
		}
		restore = append(restore, cpTime.Seconds()/rebuildTime.Seconds())
		durable = append(durable, (cpTime+syncTime).Seconds()/rebuildTime.Seconds())
		b.Logf("full copy %v, full read %v, unchanged retain %v; cp --sparse %v (+ sync %v), rebuild %v",
			copyTime, fullTime, bmTime, cpTime, syncTime, rebuildTime)

		prev := first
		for night := 1; night < 7; night++ {
			name := bitmap()
			changeChunks(b, img, len(first.Chunks)/100)
			x, st, err := format.StoreImage(ctx, store, img, format.StoreOptions{Since: &prev, Bitmap: name})
			if err != nil {
				b.Fatal(err)
			}
			stored += st.Bytes
			prev = x
		}
		nights = append(nights, float64(stored)/float64(copied))
		for _, f := range []string{"copy.qcow2", "cp.qcow2", "rebuilt.qcow2"} {
			os.Remove(filepath.Join(dir, f))
		}
		os.RemoveAll(store.Dir.String())
	}
	b.ReportMetric(mean(unchanged), "unchanged-retain-ratio")
	b.ReportMetric(mean(fullread), "fullread-ratio")
	b.ReportMetric(mean(restore), "restore-ratio")
	b.ReportMetric(mean(durable), "restore-durable-ratio")
	b.ReportMetric(mean(nights), "store-7-nights-1pct")
}

// makeBenchDisk writes 1 GiB of random data into the first half of a 2 GiB qcow2.
func makeBenchDisk(b *testing.B, dir, img string) {
	raw := filepath.Join(dir, "data.raw")
	f, err := os.Create(raw)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	for range 1024 {
		r.Read(buf)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	run(b, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img)
	run(b, "qemu-img", "resize", "-q", img, "2G")
	os.Remove(raw)
}

// changeChunks writes 4 KiB of new data into n chunks of the data half.
func changeChunks(b *testing.B, img string, n int) {
	args := []string{"-f", "qcow2"}
	for range n {
		off := int64(rand.IntN(256)) * format.ChunkSize
		args = append(args, "-c", fmt.Sprintf("write -P 0x%02x %d 4k", 1+rand.IntN(254), off))
	}
	run(b, "qemu-io", append(args, img)...)
}

// timed measures f from a clean page cache state: the writeback of the
// phase before does not slow it down.
func timed(b *testing.B, f func() int64) (time.Duration, int64) {
	b.Helper()
	syscall.Sync()
	start := time.Now()
	n := f()
	return time.Since(start), n
}

func run(b *testing.B, name string, args ...string) {
	b.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
