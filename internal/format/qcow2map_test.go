package format

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The map read from a plain qcow2 is qemu-img's own, cluster by cluster:
// data where it lies in the file, zero-flagged and never written clusters
// as zeros, across several L2 tables and an L1 entry never used, for two
// cluster sizes and a size that ends inside a cluster. Images it cannot
// read plainly are left to qemu-img.
func TestPlainQcow2MapIsQemuImgs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	create := func(name, size string, opts ...string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		args := append([]string{"create", "-q", "-f", "qcow2"}, opts...)
		if size != "" {
			args = append(args, p, size)
		} else {
			args = append(args, p)
		}
		if _, err := qemuImg(ctx, time.Minute, args...); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, cluster, size string
		writes              []string
	}{
		{"small-clusters", "64k", fmt.Sprint(3<<30 + 1536), []string{
			"write -P 0x11 0 4k", "write -P 0x12 1M 200k", "write -z 1M 64k", "write -z 9M 128k",
			"write -P 0x13 700M 1M", "discard 700M 64k", "write -P 0x14 2G 4k", "write -P 0x15 3G 1536",
			"write -P 0x16 20M 64k", "write -P 0x17 19M 64k", // the file's order is not the guest's
		}},
		{"large-clusters", "512k", "100M", []string{"write -P 0x21 512k 1M", "write -z 0 512k", "write -P 0x22 99M 4k"}},
		{"untouched", "64k", "1G", nil},
	} {
		img := create(c.name+".qcow2", c.size, "-o", "cluster_size="+c.cluster)
		for _, w := range c.writes {
			qemuIOWrite(t, img, w)
		}
		im, got, err := plainQcow2Map(img)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		info, err := ImageInfo(ctx, img)
		if err != nil {
			t.Fatal(err)
		}
		want, err := imageMap(ctx, img, "qcow2")
		if err != nil {
			t.Fatal(err)
		}
		if im.VirtualSize != info.VirtualSize || im.Format != "qcow2" || im.Filename != img {
			t.Errorf("%s: image %+v, qemu-img says %d bytes", c.name, im, info.VirtualSize)
		}
		if g, w := clusterMap(got, im.VirtualSize), clusterMap(want, im.VirtualSize); g != w {
			t.Errorf("%s: map\n%s\nqemu-img map\n%s", c.name, g, w)
		}
		if c.writes != nil && len(got) < 4 {
			t.Errorf("%s: %d extents: the test writes too little", c.name, len(got))
		}
	}

	compressed := create("compressed.qcow2", "64M")
	qemuIOWrite(t, compressed, "write -c -P 0x31 0 64k")
	backed := create("backed.qcow2", "", "-b", compressed, "-F", "qcow2")
	v2 := create("v2.qcow2", "64M", "-o", "compat=0.10")
	// A header whose L1 table cannot cover its size (damaged) is no plain image.
	short := create("short-l1.qcow2", "64M")
	f, err := os.OpenFile(short, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte{0, 0, 0, 0}, 36)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{compressed, backed, v2, short} {
		if _, _, err := plainQcow2Map(p); !errors.Is(err, errNotPlainQcow2) {
			t.Errorf("%s: %v, want it left to qemu-img", filepath.Base(p), err)
		}
	}
}

// clusterMap describes each 512-byte sector's run as qemu-img map would
// (data and its offset, or zeros), merged: two maps that split the same
// disk differently compare equal.
func clusterMap(es []extent, size int64) string {
	type run struct {
		start, end int64
		data       bool
		offset     int64
	}
	var runs []run
	for _, e := range es {
		r := run{start: e.Start, end: e.Start + e.Length, data: e.Data && !e.Zero}
		if r.data && e.Offset != nil {
			r.offset = *e.Offset
		}
		if k := len(runs) - 1; k >= 0 && runs[k].end == r.start && runs[k].data == r.data &&
			(!r.data || runs[k].offset+(runs[k].end-runs[k].start) == r.offset) {
			runs[k].end = r.end
			continue
		}
		runs = append(runs, r)
	}
	out := ""
	for _, r := range runs {
		if r.data {
			out += fmt.Sprintf("%d-%d data at %d\n", r.start, r.end, r.offset)
		} else {
			out += fmt.Sprintf("%d-%d zeros\n", r.start, r.end)
		}
	}
	return out + fmt.Sprintf("(%d bytes)", size)
}
