package control

import (
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/fsm"
)

// With three iterations, the fourth night's run leaves three leaves and three
// directories of files: the oldest goes through delete, deleting, deleted and
// is removed.
func TestRetentionFourNights(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 3))
	w.addVM("h1", "p1", "v", nil)
	node := startFakeNode(t, w.slapd)
	w.start(nil)

	var leaves []string
	for day := 1; day <= 4; day++ {
		f := w.fireAt(w.at(2024, 6, day, 3, 0))
		if len(f.Created) != 1 {
			t.Fatalf("night %d: fired %+v", day, f)
		}
		leaves = append(leaves, f.Created[0])
		w.waitCached(f.Created[0], "finished")
	}
	w.rec.waitWrite(t, leaves[0], fsm.Delete)
	w.rec.waitWrite(t, leaves[0], fsm.Absent)

	want := []string{"20240602T010000Z", "20240603T010000Z", "20240604T010000Z"}
	if got := names(w.leaves("v")); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("leaves %v, want %v", got, want)
	}
	if got := node.dirs("p1", "v"); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("backup directories %v, want %v", got, want)
	}
	if st := w.ctrl.NightlyStats(); st.RetentionDeletes != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A failed night keeps the last good backup, even with one iteration; the
// next good night replaces both.
func TestRetentionKeepsGoodOverFailed(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 1))
	w.addVM("h1", "p1", "v", nil)
	node := startFakeNode(t, w.slapd)
	w.start(nil)

	night := func(day, rv int) string {
		t.Helper()
		node.failVM("v", rv)
		f := w.fireAt(w.at(2024, 6, day, 3, 0))
		if len(f.Created) != 1 {
			t.Fatalf("day %d: fired %+v", day, f)
		}
		w.waitCached(f.Created[0], "finished")
		return f.Created[0]
	}
	first := night(1, 0)
	second := night(2, 5) // cannot save machine state
	third := night(3, 5)
	// Retention runs on each finish; with nothing expired it writes nothing.
	// The second failure pushed the first out of the one failure kept.
	w.rec.waitWrite(t, second, fsm.Absent)
	if got := names(w.leaves("v")); strings.Join(got, " ") != "20240601T010000Z 20240603T010000Z" {
		t.Fatalf("after two failed nights: leaves %v, want the good one and the latest failure", got)
	}
	if got := node.dirs("p1", "v"); strings.Join(got, " ") != "20240601T010000Z" {
		t.Fatalf("backup directories %v", got)
	}
	night(4, 0)
	w.rec.waitWrite(t, first, fsm.Absent)
	w.rec.waitWrite(t, third, fsm.Absent)
	if got := names(w.leaves("v")); strings.Join(got, " ") != "20240604T010000Z" {
		t.Fatalf("after a good night: leaves %v", got)
	}
	if got := node.dirs("p1", "v"); strings.Join(got, " ") != "20240604T010000Z" {
		t.Fatalf("backup directories %v", got)
	}
}

// Excluded VMs keep their backups, however many there are; an included VM
// with the same configuration loses the surplus.
func TestRetentionSparesExcluded(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 10, 0, 0, 0, 0, time.UTC))
	excluded, included := nightly("0", "3", 1), nightly("0", "3", 1)
	excluded.Exclude = true
	w.addVM("h1", "p1", "v", &excluded)
	w.addVM("h1", "p1", "other", &included)
	leaves := []string{"20240601T010000Z", "20240602T010000Z", "20240603T010000Z"}
	for _, vm := range []string{"v", "other"} {
		for _, n := range leaves {
			w.addLeaf(vm, n, "finished", 0)
		}
	}
	w.start(nil)
	// Retention is queued on the first full view; run it here too, so that
	// it has surely run for both when the directory is read.
	for _, vm := range []string{"v", "other"} {
		if err := w.ctrl.retain(vm); err != nil {
			t.Fatal(err)
		}
	}
	w.rec.waitWrite(t, w.store.Tree.Leaf("other", leaves[0]), fsm.Delete)
	w.rec.waitWrite(t, w.store.Tree.Leaf("other", leaves[1]), fsm.Delete)
	got := w.leaves("v")
	for _, n := range leaves {
		if got[n] != "finished" {
			t.Fatalf("excluded VM's leaves %v, want all three finished", got)
		}
	}
	w.rec.mu.Lock()
	defer w.rec.mu.Unlock()
	for _, wr := range w.rec.writes {
		// Recording a backup's outcome (finished -> finished) is no retention.
		if strings.Contains(wr.Key, "sstVirtualMachine=v,") && wr.To != wr.From {
			t.Fatalf("retention wrote to the excluded VM: %v", wr)
		}
	}
}
