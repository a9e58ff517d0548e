package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"syscall"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// Linux lseek whences for sparse files.
const (
	seekData = 3
	seekHole = 4
)

// Progress is told how many data bytes of a copy are done, of how many.
type Progress func(done, total int64)

type segment struct{ off, end int64 }

// dataSegments lists the allocated ranges of f; a file system without
// SEEK_DATA support yields one range covering the whole file.
func dataSegments(f *os.File, size int64) ([]segment, error) {
	var segs []segment
	off := int64(0)
	for off < size {
		start, err := f.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) { // no data past off
				break
			}
			if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP) {
				return []segment{{0, size}}, nil
			}
			return nil, err
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			return nil, err
		}
		if end > size {
			end = size
		}
		segs = append(segs, segment{start, end})
		off = end
	}
	return segs, nil
}

// dataMap is where a file's data lies: what a copy reads and how much.
type dataMap struct {
	size  int64
	segs  []segment
	bytes int64 // the data bytes of segs
}

// openData opens a regular file (never through a link) and maps its data.
func openData(p hostio.Path) (*os.File, dataMap, error) {
	f, err := hostio.Open(p)
	if err != nil {
		return nil, dataMap{}, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, dataMap{}, err
	}
	m := dataMap{size: st.Size()}
	if m.segs, err = dataSegments(f, m.size); err != nil {
		f.Close()
		return nil, dataMap{}, fmt.Errorf("map %s: %w", p, err)
	}
	for _, s := range m.segs {
		m.bytes += s.end - s.off
	}
	return f, m, nil
}

// CopyFile copies src to dst keeping holes (a sparse image stays sparse), through a
// temporary name so that dst exists only complete, fsynced, and then checked
// against src byte for byte over every allocated range of either file. It returns
// the number of data bytes copied.
//
// Both paths are resolved beneath their roots without following a link, and
// every write, fsync and rename passes the seam.
func CopyFile(ctx context.Context, seam *hostio.Seam, src, dst hostio.Path, perm os.FileMode, progress Progress) (int64, error) {
	in, m, err := openData(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	size, segs, total := m.size, m.segs, m.bytes

	tmp := dst.Dir().MustJoin(dst.Base() + ".partial")
	out, err := seam.Create(tmp, perm)
	if err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			out.Close()
			var plain *hostio.Seam // cleaning up is no point of its own
			_ = plain.Remove(tmp)
		}
	}()
	buf := make([]byte, 1<<20)
	var done int64
	for _, s := range segs {
		for off := s.off; off < s.end; {
			if err := ctx.Err(); err != nil {
				return done, err
			}
			n := int64(len(buf))
			if s.end-off < n {
				n = s.end - off
			}
			r, err := in.ReadAt(buf[:n], off)
			if err != nil && !(errors.Is(err, io.EOF) && int64(r) == n) {
				return done, fmt.Errorf("read %s: %w", src, err)
			}
			if err := seam.Write(out, buf[:r], off); err != nil {
				return done, fmt.Errorf("write %s: %w", tmp, err)
			}
			off += int64(r)
			done += int64(r)
			if progress != nil {
				progress(done, total)
			}
		}
	}
	if err := out.Truncate(size); err != nil {
		return done, err
	}
	if err := seam.Sync(out); err != nil {
		return done, fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := sameContent(in, out, size); err != nil {
		return done, fmt.Errorf("verify copy of %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return done, err
	}
	ok = true
	if err := seam.Rename(tmp, dst); err != nil {
		var plain *hostio.Seam
		_ = plain.Remove(tmp)
		return done, err
	}
	return done, seam.SyncDir(dst.Dir())
}

// sameContent compares a and b over the union of both files' allocated ranges;
// outside it both read as zeros.
func sameContent(a, b *os.File, size int64) error {
	sb, err := b.Stat()
	if err != nil {
		return err
	}
	if sb.Size() != size {
		return fmt.Errorf("size %d, want %d", sb.Size(), size)
	}
	sa, err := dataSegments(a, size)
	if err != nil {
		return err
	}
	sbs, err := dataSegments(b, size)
	if err != nil {
		return err
	}
	union := mergeSegments(append(sa, sbs...))
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for _, s := range union {
		for off := s.off; off < s.end; {
			n := int64(len(ba))
			if s.end-off < n {
				n = s.end - off
			}
			if _, err := a.ReadAt(ba[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if _, err := b.ReadAt(bb[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if !bytes.Equal(ba[:n], bb[:n]) {
				return fmt.Errorf("content differs near offset %d", off)
			}
			off += n
		}
	}
	return nil
}

func mergeSegments(s []segment) []segment {
	sort.Slice(s, func(i, j int) bool { return s[i].off < s[j].off })
	var out []segment
	for _, x := range s {
		if n := len(out); n > 0 && x.off <= out[n-1].end {
			if x.end > out[n-1].end {
				out[n-1].end = x.end
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

// SameFile reports whether dst is already a complete, identical copy of src, so a
// step run again after a crash does not copy twice.
func SameFile(src, dst hostio.Path) (bool, error) {
	a, err := hostio.Open(src)
	if err != nil {
		return false, err
	}
	defer a.Close()
	b, err := hostio.Open(dst)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	defer b.Close()
	st, err := a.Stat()
	if err != nil {
		return false, err
	}
	if err := sameContent(a, b, st.Size()); err != nil {
		return false, nil
	}
	return true, nil
}
