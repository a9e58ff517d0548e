package format

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// ChunkStats says what storing a disk did.
type ChunkStats struct {
	Chunks  int   // chunks of the disk
	Holes   int   // of them all zeros: neither read nor stored
	Read    int   // chunks read from the image
	Reused  int   // taken from the previous index without reading
	Written int   // chunks the store lacked and got
	Bytes   int64 // bytes written to the store (compressed)
}

// workers is how many chunks are hashed, compressed or decompressed at once.
const workers = 2

// inWorkers hands each value of in to work, in workers goroutines; the wait
// it returns blocks until in is closed and all its values are worked.
func inWorkers[T any](in <-chan T, work func(T)) (wait func()) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for v := range in {
				work(v)
			}
		})
	}
	return wg.Wait
}

// zeroChunks tells, from the image's allocation map, which chunks surely
// read as zeros (every extent they touch is zero): they are not read.
func zeroChunks(es []extent, size int64) []bool {
	zero := make([]bool, ChunkCount(size))
	for i := range zero {
		zero[i] = true
	}
	for _, e := range es {
		if e.Zero || e.Length <= 0 {
			continue
		}
		for i := e.Start / ChunkSize; i < int64(len(zero)) && i*ChunkSize < e.Start+e.Length; i++ {
			zero[i] = false
		}
	}
	return zero
}

func allZero(b []byte) bool {
	// bytes.Equal against zeros runs vectorised: every chunk of every
	// backup and restore passes here.
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

var zeroBlock [qcowCluster]byte

// imageMap is the allocation map of the image at path.
func imageMap(ctx context.Context, path, format string) ([]extent, error) {
	out, err := qemuImg(ctx, imageTimeouts().Check, "map", "-U", "-f", format, "--output=json", path)
	if err != nil {
		return nil, err
	}
	return parseMap(out)
}

// diskMap returns the image chain at path (nil when unreadable) and its
// map: read from the file for a plain qcow2, else from qemu-img.
func diskMap(ctx context.Context, path string, bitmap bool) ([]Image, []extent, error) {
	if im, es, err := plainQcow2Map(path); err == nil {
		return []Image{im}, es, nil
	}
	// An image with a bitmap is a qcow2: its map need not wait for the
	// chain's formats.
	var early chan mapResult
	if bitmap {
		early = make(chan mapResult, 1)
		go func() {
			es, err := imageMap(ctx, path, "qcow2")
			early <- mapResult{es, err}
		}()
	}
	chain, err := ImageChain(ctx, path)
	if err != nil {
		if early != nil {
			<-early
		}
		return nil, nil, err
	}
	var es []extent
	if early != nil {
		r := <-early
		es, err = r.es, r.err
		if err == nil && chain[0].Format != "qcow2" {
			err = fmt.Errorf("%w: a %s image has no bitmaps", ErrBitmapUnusable, chain[0].Format)
		}
	} else {
		es, err = imageMap(ctx, path, chain[0].Format)
	}
	return chain, es, err
}

// StoreOptions shape a StoreImage.
type StoreOptions struct {
	// Progress, if not nil, is told the bytes read so far of the disk's size.
	Progress func(done, total int64)
	// Since and Bitmap: the disk held Since's content when the persistent
	// dirty bitmap Bitmap was added to it, so only the chunks in which
	// Bitmap records a write are read; the others are Since's. One of
	// them, picked at random, is read anyway and must match Since, else
	// the call fails with ErrBitmapMismatch (the caller reads all instead).
	Since  *Index
	Bitmap string
}

// ErrBitmapMismatch: a chunk the bitmap calls unchanged differs from the
// previous index, so the bitmap does not describe this disk's history.
var ErrBitmapMismatch = errors.New("the dirty bitmap does not match the previous backup")

// StoreImage reads the disk at path as the guest sees it, stores every
// chunk the store lacks and returns the disk's index (not yet written: the
// caller writes it once the store is synced, which StoreImage does). A nil
// store only hashes, to check an image against an index.
func StoreImage(ctx context.Context, store *ChunkStore, path string, o StoreOptions) (Index, ChunkStats, error) {
	chain, es, err := diskMap(ctx, path, o.Bitmap != "")
	if chain == nil {
		return Index{}, ChunkStats{}, err
	}
	im := chain[0]
	x := Index{Format: im.Format, Size: im.VirtualSize, Chunks: make([]ChunkID, ChunkCount(im.VirtualSize))}
	st := ChunkStats{Chunks: len(x.Chunks)}
	if err != nil {
		return x, st, err
	}
	if o.Since != nil && o.Since.Size != x.Size {
		return x, st, fmt.Errorf("%w: the disk is %d bytes, was %d", ErrBitmapMismatch, x.Size, o.Since.Size)
	}
	zero := zeroChunks(es, x.Size)
	dr, err := openDisk(ctx, chain, es)
	if err != nil {
		return x, st, err
	}
	defer dr.close()
	read := make([]bool, len(x.Chunks)) // all, unless a bitmap says less
	for i := range read {
		read[i] = true
	}
	if o.Since != nil {
		if read, err = qcow2DirtyChunks(im.Filename, o.Bitmap, x.Size); err != nil {
			return x, st, err
		}
		if err := spotCheck(dr, *o.Since, read, zero); err != nil {
			return x, st, err
		}
	}

	var mu sync.Mutex // guards st and the first error
	var firstErr error
	jobs := make(chan chunkJob, workers)
	stored := inWorkers(jobs, func(j chunkJob) {
		id, wrote, n, err := storeChunk(store, j.data)
		mu.Lock()
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("store chunk %d of %s: %w", j.i, path, err)
		}
		x.Chunks[j.i] = id
		if id.IsHole() {
			st.Holes++
		}
		if wrote {
			st.Written++
			st.Bytes += n
		}
		mu.Unlock()
		bufs.Put(j.data[:cap(j.data)])
	})
	readErr := func() error {
		for i := range x.Chunks {
			if err := ctx.Err(); err != nil {
				return err
			}
			mu.Lock()
			failed := firstErr != nil
			reuse := !read[i] && !zero[i]
			switch {
			case zero[i]:
				st.Holes++
			case reuse:
				x.Chunks[i] = o.Since.Chunks[i]
				st.Reused++
				if x.Chunks[i].IsHole() {
					st.Holes++
				}
			}
			mu.Unlock()
			if failed {
				return nil
			}
			if reuse && store != nil && !x.Chunks[i].IsHole() {
				// Named again: a garbage collection must keep it. A chunk
				// gone from the store fails the partial read (then all is read).
				if err := store.Touch(x.Chunks[i]); err != nil {
					return fmt.Errorf("chunk %d of the previous backup: %w", i, err)
				}
			}
			if zero[i] || reuse {
				continue
			}
			buf := bufs.Get().([]byte)[:ChunkLen(x.Size, i)]
			if err := dr.ReadAt(buf, int64(i)*ChunkSize); err != nil {
				return fmt.Errorf("read %s: %w", path, err)
			}
			st.Read++
			if o.Progress != nil {
				o.Progress(int64(st.Read)*ChunkSize, x.Size)
			}
			jobs <- chunkJob{i, buf}
		}
		return nil
	}()
	close(jobs)
	stored()
	if readErr != nil {
		return x, st, readErr
	}
	if firstErr != nil {
		return x, st, firstErr
	}
	if err := dr.close(); err != nil {
		return x, st, err
	}
	if store != nil {
		if err := store.Sync(); err != nil {
			return x, st, err
		}
	}
	return x, st, nil
}

// spotCheck reads one chunk the bitmap calls unchanged, at random, and
// compares it with the previous index: an image that was copied or
// replaced with its bitmap does not pass for the previous backup's disk.
func spotCheck(dr *diskReader, since Index, read, zero []bool) error {
	var clean []int
	for i := range read {
		if !read[i] && !zero[i] {
			clean = append(clean, i)
		}
	}
	if len(clean) == 0 {
		return nil
	}
	i := clean[rand.IntN(len(clean))]
	buf := bufs.Get().([]byte)[:ChunkLen(since.Size, i)]
	defer bufs.Put(buf[:cap(buf)])
	if err := dr.ReadAt(buf, int64(i)*ChunkSize); err != nil {
		return err
	}
	id := zeroID
	if !allZero(buf) {
		id = sha256.Sum256(buf)
	}
	if id != since.Chunks[i] {
		return fmt.Errorf("%w: chunk %d is unchanged by the bitmap but differs", ErrBitmapMismatch, i)
	}
	return nil
}

// diskReader reads the guest-visible content of an image. Where qemu-img
// map says a range lies as is in a file of the backing chain (data with an
// offset), it is read straight from that file, as fast as a copy; zero
// ranges are not read; anything else (compressed or encrypted clusters)
// goes through qemu-nbd, exported only when needed or for a bitmap.
type diskReader struct {
	es    []extent
	files []*os.File // by depth in the backing chain
	exp   *nbdExport
}

func openDisk(ctx context.Context, chain []Image, es []extent) (*diskReader, error) {
	dr := &diskReader{es: es}
	needNBD := false
	for _, e := range es {
		needNBD = needNBD || (!e.Zero && !(e.Data && e.Offset != nil && e.Depth < len(chain)))
	}
	for _, im := range chain {
		f, err := os.Open(im.Filename)
		if err != nil {
			dr.close()
			return nil, err
		}
		dr.files = append(dr.files, f)
	}
	if needNBD {
		var err error
		if dr.exp, err = exportImage(ctx, chain[0].Filename, chain[0].Format, ""); err != nil {
			dr.close()
			return nil, err
		}
		_ = dr.exp.c.SetDeadline(time.Now().Add(imageTimeouts().dataTimeout(chain[0].VirtualSize)))
	}
	return dr, nil
}

// ReadAt fills p with the disk's content at off.
func (dr *diskReader) ReadAt(p []byte, off int64) error {
	clear(p)
	end := off + int64(len(p))
	k := sort.Search(len(dr.es), func(k int) bool { return dr.es[k].Start+dr.es[k].Length > off })
	for ; k < len(dr.es) && dr.es[k].Start < end; k++ {
		e := dr.es[k]
		from, to := max(off, e.Start), min(end, e.Start+e.Length)
		dst := p[from-off : to-off]
		switch {
		case e.Zero:
		case e.Data && e.Offset != nil && e.Depth < len(dr.files):
			if _, err := dr.files[e.Depth].ReadAt(dst, *e.Offset+from-e.Start); err != nil {
				return err
			}
		case dr.exp != nil:
			if err := dr.exp.ReadAt(dst, from); err != nil {
				return err
			}
		default:
			return fmt.Errorf("no way to read bytes %d to %d", from, to)
		}
	}
	return nil
}

func (dr *diskReader) close() error {
	for _, f := range dr.files {
		f.Close()
	}
	dr.files = nil
	if dr.exp == nil {
		return nil
	}
	return dr.exp.stop()
}

type mapResult struct {
	es  []extent
	err error
}

type chunkJob struct {
	i    int
	data []byte
}

var bufs = sync.Pool{New: func() any { return make([]byte, ChunkSize) }}

// storeChunk hashes data and stores it unless it is all zeros (a hole).
func storeChunk(store *ChunkStore, data []byte) (id ChunkID, wrote bool, n int64, err error) {
	if allZero(data) {
		return zeroID, false, 0, nil
	}
	id = sha256.Sum256(data)
	if store == nil {
		return id, false, 0, nil
	}
	if wrote, err = store.Put(id, data); wrote {
		if fi, serr := hostio.Lstat(store.ChunkPath(id)); serr == nil {
			n = fi.Size()
		}
	}
	return id, wrote, n, err
}

// RebuildImage writes the disk of index x to dst as an image of x's format,
// through a temporary name: the stored chunks are read from the store
// several at once, each checked against its name and length, and written
// in place, a qcow2 built as it goes (qcow2write.go) or a sparse raw file;
// holes and zero clusters are not written. A qcow2's structure is checked
// by qemu-img; the image is fsynced and renamed.
func RebuildImage(ctx context.Context, seam *hostio.Seam, store *ChunkStore, x Index, dst hostio.Path, perm os.FileMode) error {
	tmp := dst.Dir().MustJoin(dst.Base() + ".partial")
	var plain *hostio.Seam // cleaning up is no point of its own
	ok := false
	defer func() {
		if !ok {
			_ = plain.Remove(tmp)
		}
	}()
	if err := hostio.CheckPath(tmp); err != nil {
		return err
	}
	_ = plain.Remove(tmp)
	var err error
	switch x.Format {
	case "raw":
		err = writeRaw(ctx, seam, store, x, tmp, perm)
	case "qcow2":
		err = writeQcow2(ctx, seam, store, x, tmp, perm)
	default:
		err = fmt.Errorf("index of a %q image: only qcow2 and raw are rebuilt", x.Format)
	}
	if err != nil {
		return err
	}
	f, err := hostio.Open(tmp)
	if err != nil {
		return err
	}
	// qemu-img reads the structure while the rest of the data goes to disk.
	synced := make(chan error, 1)
	go func() { synced <- seam.Sync(f) }()
	var checked error
	if x.Format == "qcow2" {
		checked = CheckImage(ctx, tmp.String(), x.Format)
	}
	err = <-synced
	f.Close()
	if checked != nil {
		return checked
	}
	if err != nil {
		return err
	}
	if err := seam.Chmod(tmp, perm); err != nil {
		return err
	}
	if err := seam.Rename(tmp, dst); err != nil {
		return err
	}
	ok = true
	return seam.SyncDir(dst.Dir())
}

// writeRaw writes x's stored chunks into a new sparse raw file at p; zero
// clusters stay holes too.
func writeRaw(ctx context.Context, seam *hostio.Seam, store *ChunkStore, x Index, p hostio.Path, perm os.FileMode) error {
	f, err := seam.Create(p, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(x.Size); err != nil {
		return err
	}
	wb := startWriteback(f)
	defer wb.stop()
	return eachChunk(ctx, store, x, func(i int, data []byte) error {
		return dataRuns(data, func(c, end int) error {
			run := data[c*qcowCluster : min(end*qcowCluster, len(data))]
			if err := seam.Write(f, run, int64(i)*ChunkSize+int64(c)*qcowCluster); err != nil {
				return err
			}
			wb.wrote(int64(len(run)))
			return nil
		})
	})
}
