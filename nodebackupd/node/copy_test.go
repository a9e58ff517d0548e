package node

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// A sparse file is copied with its holes, checked, and recognised as already
// copied; a differing destination is not taken for a copy.
func TestCopyFileSparse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xab}, 1<<20)
	f.WriteAt(data, 0)
	f.WriteAt(data, 200<<20)
	f.Truncate(400 << 20)
	f.Close()

	var last int64
	root := hostio.In(dir)
	n, err := CopyFile(context.Background(), nil, root.MustJoin("src"), root.MustJoin("dst"), 0o640, func(done, total int64) { last = done })
	if err != nil {
		t.Fatal(err)
	}
	if n != 2<<20 || last != n {
		t.Fatalf("copied %d data bytes (last progress %d), want %d", n, last, 2<<20)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 400<<20 || st.Blocks*512 > 8<<20 {
		t.Fatalf("copy is %d bytes with %d allocated: not sparse", st.Size, st.Blocks*512)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if same, err := SameFile(root.MustJoin("src"), root.MustJoin("dst")); err != nil || !same {
		t.Fatalf("SameFile after a copy: %v %v", same, err)
	}
	g, _ := os.OpenFile(dst, os.O_WRONLY, 0)
	g.WriteAt([]byte{1}, 300<<20) // inside a hole of the source
	g.Close()
	if same, _ := SameFile(root.MustJoin("src"), root.MustJoin("dst")); same {
		t.Fatal("a changed copy is taken for complete")
	}
	if _, err := os.Stat(dst + ".partial"); !os.IsNotExist(err) {
		t.Fatal("temporary file left")
	}
}
