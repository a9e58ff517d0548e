package libvirt

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// progressLog records what a merge reports.
type progressLog struct {
	mu    sync.Mutex
	done  []int64
	total int64
}

func (p *progressLog) report(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = append(p.done, done)
	p.total = total
}

// between counts the distinct values reported strictly between 0 and total,
// after checking that they never went back.
func (p *progressLog) between(t *testing.T) int {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[int64]bool{}
	for i, d := range p.done {
		if i > 0 && d < p.done[i-1] {
			t.Fatalf("progress went back: %v", p.done)
		}
		if d > 0 && d < p.total {
			seen[d] = true
		}
	}
	if len(p.done) == 0 || p.done[len(p.done)-1] != p.total {
		t.Fatalf("progress %v does not end at the total %d", p.done, p.total)
	}
	return len(seen)
}

// traceOps arms s to fail the first operation with err (0: none) and
// returns the operations it sees.
func traceOps(s *hostio.Seam, errno syscall.Errno) *[]string {
	var ops []string
	var mu sync.Mutex
	s.Trace = func(_ int, op string) { mu.Lock(); ops = append(ops, op); mu.Unlock() }
	if errno != 0 {
		s.Arm(hostio.Fault{Kind: hostio.FailWith, N: 1, Errno: errno})
	} else {
		s.Arm(hostio.Fault{})
	}
	return &ops
}

// backupOnSeam is a snapshot of a new VM (64 MiB, RAM state on the RAM
// disk) by a Hypervisor of the test's own, whose seam the test then arms.
func backupOnSeam(t *testing.T, name string, running bool, patterns ...byte) (*Hypervisor, *hostio.Seam, *testVM, SnapshotResult) {
	t.Helper()
	h := ownH(t)
	seam := &hostio.Seam{}
	h.SetSeam(seam)
	v := newVM(t, name, "", 64, running, patterns...)
	return h, seam, v, snapshot(t, h, v.request(ramDisk))
}

// A block pull that lasts (bandwidth-limited) reports its progress all along,
// so that the node can show it and controld's deadline follows it; starting
// the pull is one seam point, and a failure there leaves the disk backed
// and the VM running.
func TestMergeReportsProgressWhilePulling(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, seam, v, res := backupOnSeam(t, "mprog", true, 0x5a)

	ops := traceOps(seam, syscall.EIO)
	if _, err := h.Merge(ctx, MergeRequest{Domain: "mprog", Disks: res.Disks}); !errors.Is(err, syscall.EIO) || !errors.Is(err, ErrMergeFailed) {
		t.Fatalf("failed pull start: %v", err)
	}
	if len(*ops) != 1 || (*ops)[0] != "block pull vda" {
		t.Fatalf("seam points %q, want the pull's start", *ops)
	}
	if im, err := format.ImageInfo(context.Background(), res.Disks[0].Source); err != nil || im.BackingFile != res.Disks[0].Retained {
		t.Fatalf("after a failed pull start: %+v %v", im, err)
	}
	v.guestReadsOriginal(t)

	ops = traceOps(seam, 0)
	var p progressLog
	start := time.Now()
	// 8 MiB of pattern at 1 MiB/s: several seconds of pulling.
	if _, err := h.Merge(ctx, MergeRequest{Domain: "mprog", Disks: res.Disks, BandwidthMiBs: 1, Progress: p.report}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if n := p.between(t); n < 3 || p.total != 32<<20 {
		t.Fatalf("a %v pull reported %d intermediate values of %d bytes: %v", took, n, p.total, p.done)
	}
	if len(*ops) != 1 || (*ops)[0] != "block pull vda" {
		t.Fatalf("seam points %q", *ops)
	}
	t.Logf("pull %v, %d reports", took, len(p.done))
	v.guestReadsOriginal(t)
}

// The offline merge of a shut-off VM reports qemu-img's progress too, and
// its rebase is one seam point.
func TestMergeReportsProgressOffline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, seam, v, res := backupOnSeam(t, "mprogoff", false, 0x6b, 0x7c)
	ops := traceOps(seam, syscall.ENOSPC)
	if _, err := h.Merge(ctx, MergeRequest{Domain: "mprogoff", Disks: res.Disks}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("failed rebase: %v", err)
	}
	if len(*ops) != 1 || (*ops)[0] != "qemu-img rebase vda" {
		t.Fatalf("seam points %q", *ops)
	}
	if im, err := format.ImageInfo(context.Background(), res.Disks[0].Source); err != nil || im.BackingFile != res.Disks[0].Retained {
		t.Fatalf("after a failed rebase: %+v %v", im, err)
	}

	ops = traceOps(seam, 0)
	var p progressLog
	if _, err := h.Merge(ctx, MergeRequest{Domain: "mprogoff", Disks: res.Disks, Progress: p.report}); err != nil {
		t.Fatal(err)
	}
	if n := p.between(t); n < 10 || p.total != 64<<20 {
		t.Fatalf("%d intermediate values of %d bytes: %v", n, p.total, p.done)
	}
	if len(*ops) != 2 || (*ops)[0] != "qemu-img rebase vda" || (*ops)[1] != "qemu-img rebase vdb" {
		t.Fatalf("seam points %q", *ops)
	}
	if v.running(t, h) {
		t.Fatal("merge started a shut-off VM")
	}
	for _, d := range v.spec.Disks {
		offlineReads(t, d.Path, d.Pattern, testenv.PatternOffset, testenv.PatternLength)
	}
}

// A merge cancelled mid-pull aborts the block job through the seam and
// leaves the disk backed; the next merge finishes it.
func TestMergeCancelAbortsThroughSeam(t *testing.T) {
	t.Parallel()
	h, seam, v, res := backupOnSeam(t, "mcancel", true, 0x4d)
	ops := traceOps(seam, 0)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := h.Merge(ctx, MergeRequest{Domain: "mcancel", Disks: res.Disks, BandwidthMiBs: 1, Progress: func(done, _ int64) {
		if done > 0 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled merge: %v", err)
	}
	if len(*ops) != 2 || (*ops)[0] != "block pull vda" || (*ops)[1] != "block job abort vda" {
		t.Fatalf("seam points %q", *ops)
	}
	v.guestReadsOriginal(t)
	if _, err := h.Merge(context.Background(), MergeRequest{Domain: "mcancel", Disks: res.Disks}); err != nil {
		t.Fatal(err)
	}
	v.guestReadsOriginal(t)
}
