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
	w, node := retentionWorld(t, 3)
	var leaves []string
	for day := 1; day <= 4; day++ {
		leaves = append(leaves, w.night(day))
	}
	w.rec.waitWrite(t, leaves[0], fsm.Delete)
	w.rec.waitWrite(t, leaves[0], fsm.Absent)

	want := []string{"20240602T010000Z", "20240603T010000Z", "20240604T010000Z"}
	eq(t, "leaves", names(w.leaves("v")), want)
	eq(t, "backup directories", node.dirs("p1", "v"), want)
	if st := w.ctrl.NightlyStats(); st.RetentionDeletes != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A failed night keeps the last good backup, even with one iteration; the
// next good night replaces both.
func TestRetentionKeepsGoodOverFailed(t *testing.T) {
	w, node := retentionWorld(t, 1)
	night := func(day, rv int) string {
		t.Helper()
		node.failVM("v", rv)
		return w.night(day)
	}
	first := night(1, 0)
	second := night(2, 5) // cannot save machine state
	third := night(3, 5)
	// Retention runs on each finish; with nothing expired it writes nothing.
	// The second failure pushed the first out of the one failure kept.
	w.rec.waitWrite(t, second, fsm.Absent)
	eq(t, "leaves after two failed nights (the good one and the latest failure)", names(w.leaves("v")), []string{"20240601T010000Z", "20240603T010000Z"})
	eq(t, "backup directories", node.dirs("p1", "v"), []string{"20240601T010000Z"})
	night(4, 0)
	w.rec.waitWrite(t, first, fsm.Absent)
	w.rec.waitWrite(t, third, fsm.Absent)
	eq(t, "leaves after a good night", names(w.leaves("v")), []string{"20240604T010000Z"})
	eq(t, "backup directories", node.dirs("p1", "v"), []string{"20240604T010000Z"})
}

// retentionWorld has one VM, v on h1 in p1, backed up at 03:00 in June 2024
// and keeping iterations backups, and a node that does the work.
func retentionWorld(t *testing.T, iterations int) (*world, *fakeNode) {
	t.Helper()
	w := newWorld(t, time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", iterations))
	w.addVM("h1", "p1", "v", nil)
	node := startFakeNode(t, w.slapd)
	w.start(nil)
	return w, node
}

// night fires the 03:00 run of a June day, which must create one leaf, and
// waits for it to finish.
func (w *world) night(day int) string {
	w.t.Helper()
	f := w.fireAt(w.at(2024, 6, day, 3, 0))
	if len(f.Created) != 1 {
		w.t.Fatalf("night %d: fired %+v", day, f)
	}
	w.waitCached(f.Created[0], "finished")
	return f.Created[0]
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
