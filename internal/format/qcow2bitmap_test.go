package format

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// The dirty chunks read from a qcow2's bitmap are QEMU's own reading of it
// (through qemu-nbd), for bitmaps of one and of several data clusters, a
// granularity larger than a chunk, and one that recorded nothing; a bitmap
// the image lacks is unusable.
func TestQcow2BitmapReadsAsQEMUReadsIt(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.qcow2")
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
	}
	const size = 1 << 30
	run("qemu-img", "create", "-q", "-f", "qcow2", img, fmt.Sprint(size))
	// 512-byte granules: 256 MiB per bitmap cluster, four of them here.
	bitmaps := map[string]string{"stoney-fine": "512", "stoney-coarse": "8M", "stoney-default": "", "stoney-unused": ""}
	for name, g := range bitmaps {
		args := []string{"bitmap", "--add", img, name}
		if g != "" {
			args = append(args, "-g", g)
		}
		run("qemu-img", args...)
	}
	run("qemu-img", "bitmap", "--disable", img, "stoney-unused")
	run("qemu-io", "-f", "qcow2", "-c", "write 0 512", "-c", "write 300M 1k", "-c", "write 700M 9M",
		"-c", fmt.Sprintf("write %d 512", size-512), img)
	for name := range bitmaps {
		got, err := qcow2DirtyChunks(img, name, size)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := nbdDirtyChunks(t, img, name, size)
		if !slices.Equal(got, want) {
			t.Errorf("%s: read %v, QEMU reads %v", name, dirtyList(got), dirtyList(want))
		}
		if n := len(dirtyList(got)); (name == "stoney-unused") != (n == 0) {
			t.Errorf("%s: %d dirty chunks", name, n)
		}
	}
	if _, err := qcow2DirtyChunks(img, "stoney-none", size); !errors.Is(err, ErrBitmapUnusable) {
		t.Fatalf("a bitmap the image lacks: %v", err)
	}
}

func dirtyList(d []bool) []int {
	var out []int
	for i, v := range d {
		if v {
			out = append(out, i)
		}
	}
	return out
}

// nbdDirtyChunks is QEMU's reading of the bitmap: qemu-img maps a qemu-nbd
// export with the bitmap as its allocation, where a dirty range reads as
// "no data".
func nbdDirtyChunks(t *testing.T, img, bitmap string, size int64) []bool {
	t.Helper()
	exp, err := exportImage(t.Context(), img, "qcow2", bitmap)
	if err != nil {
		t.Fatal(err)
	}
	defer exp.stop()
	out, err := qemuImg(t.Context(), time.Minute, "map", "--output=json", "--image-opts",
		"driver=nbd,server.type=unix,server.path="+exp.Socket()+",x-dirty-bitmap=qemu:dirty-bitmap:"+bitmap)
	if err != nil {
		t.Fatal(err)
	}
	es, err := parseMap(out)
	if err != nil {
		t.Fatal(err)
	}
	dirty := make([]bool, ChunkCount(size))
	for _, e := range es {
		if e.Data {
			continue
		}
		for i := e.Start / ChunkSize; i < int64(len(dirty)) && i*ChunkSize < e.Start+e.Length; i++ {
			dirty[i] = true
		}
	}
	return dirty
}
