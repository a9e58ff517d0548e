package format_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/format/formattest"
)

// A store runs one job at a time; each run leaves its record, a failed one
// too, and the records read back as they were written.
func TestStoreJobsRunOneAtATimeAndKeepRecords(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	s := format.OpenChunkStore(root, nil)
	id := formattest.UnnamedChunk(t, s, []byte("a chunk no index names"), 48*time.Hour)

	unlock, err := s.LockJobs()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := format.RunGC(ctx, format.OpenChunkStore(root, nil), root, "kvm-02", format.DefaultGrace); !errors.Is(err, format.ErrStoreBusy) {
		t.Fatalf("a second job while one runs: %v", err)
	}
	unlock()
	gc, err := format.RunGC(ctx, s, root, "kvm-01", format.DefaultGrace)
	if err != nil || gc.GC.Removed != 1 || s.Has(id) {
		t.Fatalf("gc: %+v %v", gc, err)
	}
	if _, err := format.RunVerify(ctx, s, root, "kvm-01", 3, 2); err == nil {
		t.Fatal("verify of part 3 of 2 passed")
	}
	jobs, err := format.ReadStoreJobs(s)
	if err != nil || len(jobs) != 2 {
		t.Fatalf("records: %+v %v", jobs, err)
	}
	if g := jobs[format.JobGC]; g.Host != "kvm-01" || g.GC == nil || g.GC.RemovedBytes == 0 || g.Failed() || g.End.Before(g.Start) {
		t.Fatalf("gc record: %+v", g)
	}
	if v := jobs[format.JobVerify]; v.Error == "" || !v.Failed() || v.Parts != 2 {
		t.Fatalf("failed verify's record: %+v", v)
	}
	if got := jobs[format.JobGC].Summary(); got[:3] != "gc " || !strings.Contains(got, "removed=1") {
		t.Fatalf("summary %q", got)
	}
	if _, err := os.Stat(filepath.Join(root, format.ChunkStoreDir, "gc.last.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary record left: %v", err)
	}
}

func TestPartOfDayCoversEveryPart(t *testing.T) {
	seen := map[int]bool{}
	day := time.Date(2026, 11, 29, 13, 0, 0, 0, time.UTC)
	for i := range 7 {
		seen[format.PartOfDay(day.Add(time.Duration(i)*24*time.Hour), 7)] = true
	}
	if len(seen) != 7 {
		t.Fatalf("7 days check parts %v", seen)
	}
}
