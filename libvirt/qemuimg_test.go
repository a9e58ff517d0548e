package libvirt

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func qemuIOWrite(t *testing.T, path, cmd string) {
	t.Helper()
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", cmd, path).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io %s: %v: %s", cmd, err, out)
	}
}

// The exported image helpers against the real qemu-img.
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
	if eq, err := CompareImages(a, b); err != nil || !eq {
		t.Fatalf("equal images: %v %v", eq, err)
	}
	qemuIOWrite(t, b, "write -P 0x12 2M 4k")
	if eq, err := CompareImages(a, b); err != nil || eq {
		t.Fatalf("different images: %v %v", eq, err)
	}
	if err := createOverlay(ctx, a, "qcow2", c); err != nil {
		t.Fatal(err)
	}
	if im, err := ImageInfo(c); err != nil || im.BackingFile != a || im.Format != "qcow2" || im.VirtualSize != 16<<20 {
		t.Fatalf("overlay: %+v %v", im, err)
	}
	if chain, err := ImageChain(c); err != nil || len(chain) != 2 {
		t.Fatalf("chain: %+v %v", chain, err)
	}
	if eq, err := CompareImages(a, c); err != nil || !eq {
		t.Fatalf("overlay reads its backing file: %v %v", eq, err)
	}
	if err := rebaseStandalone(ctx, c, 16<<20, nil); err != nil {
		t.Fatal(err)
	}
	os.Remove(a)
	if im, err := ImageInfo(c); err != nil || im.BackingFile != "" {
		t.Fatalf("rebased: %+v %v", im, err)
	}
	offlineReads(t, c, 0x11, 1<<20, 2<<20)
	if err := CheckImage(c); err != nil {
		t.Fatal(err)
	}
	if _, err := ImageInfo(a); !errors.Is(err, ErrMissingFile) {
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
	if err := CheckImage(b); !errors.Is(err, ErrCorruptImage) {
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
	old := SetImageTimeouts(ImageTimeouts{Query: 500 * time.Millisecond, Check: 500 * time.Millisecond})
	t.Cleanup(func() { SetImageTimeouts(old) })
	for name, call := range map[string]func() error{
		"info":  func() error { _, err := ImageInfo(fifo); return err },
		"chain": func() error { _, err := ImageChain(fifo); return err },
		"check": func() error { return CheckImage(fifo) },
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
