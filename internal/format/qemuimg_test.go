package format

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

func qemuIOWrite(t *testing.T, path, cmd string) {
	t.Helper()
	if err := testenv.WriteImage(path, cmd); err != nil {
		t.Fatal(err)
	}
}

// The exported image calls against the real qemu-img.
func TestImageHelpers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2"), filepath.Join(dir, "c.qcow2")
	for _, p := range []string{a, b} {
		if _, err := qemuImg(ctx, time.Minute, "create", "-q", "-f", "qcow2", p, "16M"); err != nil {
			t.Fatal(err)
		}
		qemuIOWrite(t, p, "write -P 0x11 1M 2M")
	}
	if eq, err := CompareImages(ctx, a, b); err != nil || !eq {
		t.Fatalf("equal images: %v %v", eq, err)
	}
	qemuIOWrite(t, b, "write -P 0x12 2M 4k")
	if eq, err := CompareImages(ctx, a, b); err != nil || eq {
		t.Fatalf("different images: %v %v", eq, err)
	}
	if err := CreateOverlay(ctx, a, "qcow2", c); err != nil {
		t.Fatal(err)
	}
	if im, err := ImageInfo(ctx, c); err != nil || im.BackingFile != a || im.Format != "qcow2" || im.VirtualSize != 16<<20 {
		t.Fatalf("overlay: %+v %v", im, err)
	}
	if chain, err := ImageChain(ctx, c); err != nil || len(chain) != 2 {
		t.Fatalf("chain: %+v %v", chain, err)
	}
	if eq, err := CompareImages(ctx, a, c); err != nil || !eq {
		t.Fatalf("overlay reads its backing file: %v %v", eq, err)
	}
	if err := RebaseStandalone(ctx, c, 16<<20, nil); err != nil {
		t.Fatal(err)
	}
	os.Remove(a)
	if im, err := ImageInfo(ctx, c); err != nil || im.BackingFile != "" {
		t.Fatalf("rebased: %+v %v", im, err)
	}
	if out, err := exec.Command("qemu-io", "-r", "-U", "-f", "qcow2", "-c", "read -P 0x11 1M 2M", c).CombinedOutput(); err != nil ||
		strings.Contains(string(out), "Pattern verification failed") {
		t.Fatalf("rebased image lost data: %v %s", err, out)
	}
	if err := CheckImage(ctx, c, "qcow2"); err != nil {
		t.Fatal(err)
	}
	if _, err := ImageInfo(ctx, a); !errors.Is(err, ErrMissingFile) {
		t.Fatalf("missing image: %v", err)
	}

	// Zero the first refcounts: qemu-img check finds corruptions.
	f, err := os.OpenFile(b, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 64)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	table := make([]byte, 8)
	if _, err := f.ReadAt(table, int64(binary.BigEndian.Uint64(hdr[48:56]))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 16), int64(binary.BigEndian.Uint64(table))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := CheckImage(ctx, b, ""); !errors.Is(err, ErrCorruptImage) {
		t.Fatalf("corrupt image: %v", err)
	}
}

// A qemu-img that never ends (a hung NFS mount) fails its call within the
// call's timeout, with ErrImageTimeout, instead of holding the worker for
// good; also when it left a child holding its output open.
func TestQemuImgHangTimesOut(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "qemu-img")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nsleep 600 &\nwait\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	start := time.Now()
	_, err := qemuImg(context.Background(), 300*time.Millisecond, "info", "x")
	if took := time.Since(start); took > 300*time.Millisecond+3*killGrace {
		t.Fatalf("a hung qemu-img held the call %v", took)
	}
	if !errors.Is(err, ErrImageTimeout) {
		t.Fatalf("want ErrImageTimeout, got %v", err)
	}
}

// The real qemu-img on an image that blocks on open (a FIFO, as a dead NFS
// server blocks a read): ImageInfo and CheckImage return within their
// configured timeouts, classified.
func TestImageInfoOnHungFileTimesOut(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "hung.qcow2")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old := SetImageTimeouts(ImageTimeouts{Query: 500 * time.Millisecond, Check: 500 * time.Millisecond})
	t.Cleanup(func() { SetImageTimeouts(old) })
	for name, call := range map[string]func() error{
		"info":  func() error { _, err := ImageInfo(ctx, fifo); return err },
		"chain": func() error { _, err := ImageChain(ctx, fifo); return err },
		"check": func() error { return CheckImage(ctx, fifo, "") },
	} {
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- call() }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrImageTimeout) || errors.Is(err, ErrCorruptImage) {
				t.Errorf("%s: want ErrImageTimeout (and no verdict on the image), got %v", name, err)
			}
			t.Logf("%s: %v after %v", name, err, time.Since(start).Round(time.Millisecond))
		case <-time.After(500*time.Millisecond + 3*killGrace):
			t.Fatalf("%s on a FIFO still running after %v", name, time.Since(start))
		}
	}
}

// The progress qemu-img -p writes, as captured from `qemu-img rebase -p`,
// read in arbitrary pieces: every step, in order, from 0 to 1.
func TestParseRebaseProgress(t *testing.T) {
	b, err := os.ReadFile("testdata/rebase-progress.txt")
	if err != nil {
		t.Fatal(err)
	}
	var got []float64
	pr := &progressReader{report: func(s float64) { got = append(got, s) }}
	for i := 0; i < len(b); i += 7 {
		pr.Write(b[i:min(i+7, len(b))])
	}
	if len(got) < 30 || got[0] != 0 || got[len(got)-1] != 1 {
		t.Fatalf("%d steps %v", len(got), got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			t.Fatalf("progress went back at %d: %v", i, got)
		}
	}
	if got[4] != 0.125 {
		t.Fatalf("step 4 is %v, want 0.125 (12.50%%)", got[4])
	}
	for _, bad := range []string{"", "qemu-img: error", "(12.5/50%)", "(x/100%)", "(101.00/100%)"} {
		if _, ok := parseProgressLine(bad); ok {
			t.Errorf("%q read as progress", bad)
		}
	}
}

// CheckImage passes a good qcow2 and a raw image where raw is expected, and
// refuses one cut short, even by less than a cluster (qemu-img check alone
// passes that), one of another format than the XML says, one that is no
// image, a raw one where any format may be, and a corrupt one.
func TestCheckImage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	img, raw := filepath.Join(dir, "disk.qcow2"), filepath.Join(dir, "disk.img")
	for _, args := range [][]string{
		{"qemu-img", "create", "-q", "-f", "qcow2", img, "64M"},
		{"qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 8M", img},
		{"qemu-img", "create", "-q", "-f", "raw", raw, "1M"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	if err := CheckImage(ctx, img, "qcow2"); err != nil {
		t.Fatalf("a good image: %v", err)
	}
	if err := CheckImage(ctx, raw, "raw"); err != nil {
		t.Fatalf("a raw image: %v", err)
	}
	st, _ := os.Stat(img)
	cut := func(name string, size int64) string {
		t.Helper()
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b[:size], 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, path, format, want string
	}{
		{"cut by 4 KiB", cut("short.qcow2", st.Size()-4096), "qcow2", "truncated"},
		{"cut by 4 KiB, any format", cut("short.qcow2", st.Size()-4096), "", "truncated"},
		{"cut to half", cut("half.qcow2", st.Size()/2), "qcow2", "truncated"},
		{"another format", img, "raw", "a qcow2 image, the domain XML says raw"},
		{"not an image", cut("text.qcow2", 0), "qcow2", "a raw image"},
		{"not an image, any format", cut("text.qcow2", 0), "", "reads as a raw image"},
		{"raw, any format", raw, "", "reads as a raw image"},
	} {
		err := CheckImage(ctx, tc.path, tc.format)
		if !errors.Is(err, ErrCorruptImage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrCorruptImage saying %q", tc.name, err, tc.want)
		}
	}
	if err := CheckImage(ctx, filepath.Join(dir, "none.qcow2"), ""); !errors.Is(err, ErrMissingFile) {
		t.Errorf("a missing image: %v", err)
	}
	corrupt := cut("corrupt.qcow2", st.Size())
	f, err := os.OpenFile(corrupt, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{0xff}, 64), 40) // L1 and refcount table offsets
	f.Close()
	if err := CheckImage(ctx, corrupt, "qcow2"); !errors.Is(err, ErrCorruptImage) {
		t.Errorf("a corrupt header: %v", err)
	}
}

func TestParseImageInfo(t *testing.T) {
	im, err := parseImageInfo([]byte(readTestdata(t, "info-overlay.json")))
	if err != nil {
		t.Fatal(err)
	}
	if im.Format != "qcow2" || im.VirtualSize != 64<<20 || im.BackingFile != "/srv/retain/s1.qcow2" ||
		im.BackingFormat != "qcow2" || im.Filename != "/srv/images/s1.qcow2" || im.Corrupt {
		t.Errorf("%+v", im)
	}
	chain, err := parseImageChain([]byte(readTestdata(t, "info-overlay-chain.json")))
	if err != nil || len(chain) != 2 || chain[1].Filename != "/srv/retain/s1.qcow2" || chain[1].BackingFile != "" {
		t.Errorf("%+v %v", chain, err)
	}
	chain, err = parseImageChain([]byte(readTestdata(t, "info-merged-chain.json")))
	if err != nil || len(chain) != 1 || chain[0].BackingFile != "" {
		t.Errorf("%+v %v", chain, err)
	}
	for _, bad := range []string{"", "{}", "qemu-img: Could not open", "[]"} {
		if _, err := parseImageInfo([]byte(bad)); err == nil {
			t.Errorf("parseImageInfo(%q) succeeded", bad)
		}
		if _, err := parseImageChain([]byte(bad)); err == nil {
			t.Errorf("parseImageChain(%q) succeeded", bad)
		}
	}
}

func TestParseCheck(t *testing.T) {
	c, err := parseCheck([]byte(readTestdata(t, "check-ok.json")))
	if err != nil || c.Corruptions != 0 || c.CheckErrors != 0 || c.Format != "qcow2" {
		t.Errorf("%+v %v", c, err)
	}
	c, err = parseCheck([]byte(readTestdata(t, "check-corrupt.json")))
	if err != nil || c.Corruptions != 12 {
		t.Errorf("%+v %v", c, err)
	}
	if _, err := parseCheck([]byte("{}")); err == nil {
		t.Error("empty check parsed")
	}
}

// The end of the image's own data: extents of a backing file (depth > 0),
// holes and zeros do not count.
func TestParseMap(t *testing.T) {
	es, err := parseMap([]byte(`[
{ "start": 0, "length": 1048576, "depth": 1, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 1048576, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 262144},
{ "start": 1114112, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false, "offset": 9437184},
{ "start": 1179648, "length": 66945024, "depth": 0, "present": false, "zero": true, "data": false}]`))
	if err != nil || len(es) != 4 {
		t.Fatalf("%+v %v", es, err)
	}
	if end := dataEnd(es); end != 262144+65536 {
		t.Errorf("data end %d", end)
	}
	if _, err := parseMap([]byte("qemu-img: Could not open")); err == nil {
		t.Error("an error message parsed as a map")
	}
}
