package control

import (
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// VMs due at the same minute get leaves of one name, in UTC, and each host's
// are all created before the first snapshot of that host is asked for.
func TestNightlyBatch(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 0, 0, 0, 0, time.UTC)) // 02:00 in Zurich
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 3))
	for _, vm := range []string{"a1", "a2", "a3"} {
		w.addVM("h1", "p1", vm, nil)
	}
	w.addVM("h2", "p1", "b1", nil)
	w.start(nil)

	for _, p := range w.ctrl.Plans() {
		if p.Status != PlanScheduled || LeafName(p.Next) != "20240603T010000Z" || p.Source != w.store.Tree.GlobalBackup() {
			t.Fatalf("plan %+v, want scheduled for 03:00 local from the global entry", p)
		}
	}
	f := w.fireAt(w.at(2024, 6, 3, 3, 0))
	if len(f.Created) != 4 || len(f.Skipped)+len(f.Failed)+len(f.Existing) != 0 {
		t.Fatalf("fired %+v, want 4 leaves created", f)
	}
	for _, dn := range f.Created {
		if !strings.HasPrefix(dn, "ou=20240603T010000Z,") {
			t.Fatalf("leaf %s is not named after 03:00 local in UTC", dn)
		}
	}
	for _, vm := range []string{"a1", "a2", "a3", "b1"} {
		w.rec.waitWrite(t, w.store.Tree.Leaf(vm, "20240603T010000Z"), fsm.Snapshot)
	}
	// Every creation precedes every snapshot request: each host's batch was
	// complete when its snapshots went out together.
	w.rec.mu.Lock()
	lastCreate, firstSnapshot := -1, len(w.rec.writes)
	for i, wr := range w.rec.writes {
		switch wr.To {
		case fsm.Initialize:
			lastCreate = i
		case fsm.Snapshot:
			firstSnapshot = min(firstSnapshot, i)
		}
	}
	w.rec.mu.Unlock()
	if lastCreate < 0 || lastCreate > firstSnapshot {
		t.Fatalf("a snapshot was requested before the batch was complete (last creation %d, first snapshot %d)", lastCreate, firstSnapshot)
	}
	if st := w.ctrl.NightlyStats(); st.Created != 4 {
		t.Fatalf("stats %+v", st)
	}
	if p, _ := w.ctrl.Plan("a1"); LeafName(p.Next) != "20240604T010000Z" {
		t.Fatalf("next run after the firing: %v", p.Next)
	}
}

// An invalid field is reported for its VM alone; the others still run.
func TestNightlyInvalidField(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 0, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 3))
	w.addVM("h1", "p1", "good", nil)
	bad := nightly("0", "25", 3)
	w.addVM("h1", "p1", "bad", &bad)
	w.start(nil)

	p, _ := w.ctrl.Plan("bad")
	if p.Status != PlanInvalid || p.Err == nil || !strings.Contains(p.Err.Error(), `sstCronHour "25"`) ||
		!strings.Contains(p.Err.Error(), w.store.Tree.VMBackup("bad")) {
		t.Fatalf("bad VM's plan: %+v (err %v)", p, p.Err)
	}
	if !strings.Contains(w.logBuf.String(), "vm=bad") {
		t.Fatalf("no warning for the bad VM in the log:\n%s", w.logBuf)
	}
	f := w.fireAt(w.at(2024, 6, 3, 3, 0))
	if len(f.Created) != 1 || !strings.Contains(f.Created[0], "sstVirtualMachine=good,") {
		t.Fatalf("fired %+v, want the good VM's leaf only", f)
	}
	// Fixing the field in the directory brings the VM back, through the watch.
	w.update(w.store.Tree.VMBackup("bad"), map[string][]string{ldapschema.AttrCronHour: {"4"}})
	w.rec.wait(t, "the fixed plan", func() bool { return w.rec.plans["bad"].Status == PlanScheduled })
	if f := w.fireAt(w.at(2024, 6, 3, 4, 0)); len(f.Created) != 1 || !strings.Contains(f.Created[0], "sstVirtualMachine=bad,") {
		t.Fatalf("fired %+v after the fix", f)
	}
}

// A VM whose last leaf is still active is skipped with a warning and a count,
// never queued; a failed leaf does not block the next night.
func TestNightlySkipsActiveNotFailed(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 0, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 3))
	for _, vm := range []string{"busy", "failed", "fine"} {
		w.addVM("h1", "p1", vm, nil)
	}
	w.addLeaf("busy", "20240602T010000Z", string(fsm.Snapshotting), 0)
	w.addLeaf("failed", "20240602T010000Z", string(fsm.Finished), int(ldapschema.RCCannotSaveState))
	w.addLeaf("fine", "20240602T010000Z", string(fsm.Finished), 0)
	w.start(nil)

	for night, day := range []int{3, 4} {
		f := w.fireAt(w.at(2024, 6, day, 3, 0))
		if len(f.Created) != 2 || len(f.Skipped) != 1 || f.Skipped[0] != "busy" {
			t.Fatalf("night %d: fired %+v, want failed and fine created, busy skipped", night+1, f)
		}
		if st := w.ctrl.NightlyStats(); st.SkippedBusy != uint64(night+1) {
			t.Fatalf("night %d: %d skips counted", night+1, st.SkippedBusy)
		}
		// Let the night's leaves end, as a node would.
		for _, dn := range f.Created {
			w.finish(dn, 0)
		}
	}
	if got := names(w.leaves("busy")); len(got) != 1 {
		t.Fatalf("busy VM has leaves %v, want only the active one", got)
	}
	if !strings.Contains(w.logBuf.String(), "backup skipped tonight") {
		t.Fatal("no warning logged for the skipped VM")
	}
}

// Exclusion stops new leaves and keeps the old ones listed; re-inclusion
// brings the schedule back, also for the seed's exclusion entry, which has no
// cron fields of its own.
func TestNightlyExclusion(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 0, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 1))
	own := nightly("0", "3", 1)
	w.addVM("h1", "p1", "own", &own)
	w.addVM("h1", "p1", "seed", nil)
	w.addVM("h1", "p1", "other", nil)
	for _, vm := range []string{"own", "seed"} {
		w.addLeaf(vm, "20240601T010000Z", string(fsm.Finished), 0)
	}
	// The seed's "How to exclude a machine": the backup class and the flag only.
	if err := w.slapd.LDAPAdd(`dn: ` + w.store.Tree.VMBackup("seed") + `
changetype: modify
add: objectclass
objectclass: sstVirtualizationBackupObjectClass
-
add: sstbackupexcludefrombackup
sstbackupexcludefrombackup: TRUE
`); err != nil {
		t.Fatal(err)
	}
	w.start(nil)
	w.update(w.store.Tree.VMBackup("own"), map[string][]string{ldapschema.AttrBackupExcludeFromBackup: {"TRUE"}})
	w.rec.wait(t, "own excluded", func() bool { return w.rec.plans["own"].Status == PlanExcluded })
	if p, _ := w.ctrl.Plan("seed"); p.Status != PlanExcluded {
		t.Fatalf("seed-style exclusion: plan %+v", p)
	}

	f := w.fireAt(w.at(2024, 6, 3, 3, 0))
	if len(f.Created) != 1 || !strings.Contains(f.Created[0], "sstVirtualMachine=other,") {
		t.Fatalf("fired %+v, want the included VM only", f)
	}
	for _, vm := range []string{"own", "seed"} {
		bs, err := ListBackups(w.store, vm)
		if err != nil || len(bs) != 1 || bs[0].Mode != "finished" || bs[0].Leaf != "20240601T010000Z" {
			t.Fatalf("%s: backups %+v (%v), want the old one, still restorable", vm, bs, err)
		}
	}

	w.update(w.store.Tree.VMBackup("own"), map[string][]string{ldapschema.AttrBackupExcludeFromBackup: {"FALSE"}})
	w.update(w.store.Tree.VMBackup("seed"), map[string][]string{ldapschema.AttrBackupExcludeFromBackup: {"FALSE"}})
	w.rec.wait(t, "both included", func() bool {
		return w.rec.plans["own"].Status == PlanScheduled && w.rec.plans["seed"].Status == PlanScheduled
	})
	if p, _ := w.ctrl.Plan("seed"); p.ScheduleSource != w.store.Tree.GlobalBackup() || p.Source != w.store.Tree.VMBackup("seed") {
		t.Fatalf("seed-style entry: plan %+v, want its own config with the global schedule", p)
	}
	// "other" still has last night's leaf waiting for a node: skipped.
	f = w.fireAt(w.at(2024, 6, 4, 3, 0))
	if len(f.Created) != 2 || !strings.Contains(strings.Join(f.Created, " "), "sstVirtualMachine=own,") ||
		!strings.Contains(strings.Join(f.Created, " "), "sstVirtualMachine=seed,") {
		t.Fatalf("fired %+v after re-inclusion, want own and seed", f)
	}
}

// Runs missed while controld was down are made up once on start, within
// the window; a restart after that makes up nothing.
func TestNightlyCatchUp(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 2, 30, 0, 0, time.UTC)) // 04:30 in Zurich
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 3))
	w.addVM("h1", "p1", "missed", nil)
	w.addVM("h1", "p1", "ran", nil)
	evening := nightly("0", "21", 3) // 21:00 yesterday: 7.5 hours ago
	w.addVM("h1", "p1", "old", &evening)
	w.addLeaf("ran", "20240603T010000Z", string(fsm.Finished), 0)

	n := w.rec.fireCount()
	w.start(nil)
	w.rec.wait(t, "the catch-up firing", func() bool { return len(w.rec.fires) > n })
	f := w.rec.fires[n]
	if len(f.Created) != 1 || f.Created[0] != w.store.Tree.Leaf("missed", "20240603T010000Z") {
		t.Fatalf("fired %+v, want the missed 03:00 run of 'missed' only", f)
	}
	if st := w.ctrl.NightlyStats(); st.CaughtUp != 1 {
		t.Fatalf("stats %+v", st)
	}
	if p, _ := w.ctrl.Plan("old"); LeafName(p.Next) != "20240603T190000Z" {
		t.Fatalf("'old' (outside the window): next %v, want tonight 21:00", p.Next)
	}
	w.stop()

	w.clock.Set(w.at(2024, 6, 3, 4, 40))
	w.start(nil)
	for _, vm := range []string{"missed", "ran"} {
		if p, _ := w.ctrl.Plan(vm); LeafName(p.Next) != "20240604T010000Z" {
			t.Fatalf("after a restart, %s is due %v, want tomorrow", vm, p.Next)
		}
	}
	if got := names(w.leaves("missed")); len(got) != 1 {
		t.Fatalf("missed VM has leaves %v", got)
	}
}

// A schedule changed in the directory is in effect within a second, at each
// level: global, pool, VM.
func TestNightlyScheduleChange(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 0, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 3))
	w.addPool("p1")
	w.addVM("h1", "p1", "v", nil)
	w.start(nil)

	nextIs := func(what, leaf string, change func()) {
		t.Helper()
		begin := time.Now()
		change()
		w.rec.wait(t, what, func() bool { return LeafName(w.rec.plans["v"].Next) == leaf })
		if d := time.Since(begin); d > time.Second {
			t.Fatalf("%s: took %v", what, d)
		}
	}
	nextIs("global moved to 04:15", "20240603T021500Z", func() {
		w.update(w.store.Tree.GlobalBackup(), map[string][]string{ldapschema.AttrCronHour: {"4"}, ldapschema.AttrCronMinute: {"15"}})
	})
	nextIs("the pool's own schedule", "20240603T033000Z", func() {
		w.addConfig(w.store.Tree.PoolBackup("p1"), nightly("30", "5", 3))
	})
	nextIs("the VM's own schedule", "20240603T000500Z", func() {
		w.addConfig(w.store.Tree.VMBackup("v"), nightly("5", "2", 3))
	})
	nextIs("the VM's entry deleted: back to the pool's", "20240603T033000Z", func() {
		if err := w.store.Delete(w.store.Tree.VMBackup("v")); err != nil {
			t.Fatal(err)
		}
	})
	w.update(w.store.Tree.PoolBackup("p1"), map[string][]string{ldapschema.AttrCronActive: {"FALSE"}})
	w.rec.wait(t, "inactive", func() bool { return w.rec.plans["v"].Status == PlanInactive })

	w.update(w.store.Tree.PoolBackup("p1"), map[string][]string{ldapschema.AttrCronActive: {"TRUE"}})
	w.rec.wait(t, "active again", func() bool { return w.rec.plans["v"].Status == PlanScheduled })
	if f := w.fireAt(w.at(2024, 6, 3, 5, 30)); len(f.Created) != 1 || f.Created[0] != w.store.Tree.Leaf("v", "20240603T033000Z") {
		t.Fatalf("fired %+v", f)
	}
}

// Through both daylight-saving nights, a job in the skipped or repeated hour
// runs once; the leaf names are the planned UTC times.
func TestNightlyDaylightSaving(t *testing.T) {
	w := newWorld(t, time.Date(2024, 3, 29, 12, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("30", "2", 3))
	w.addVM("h1", "p1", "v", nil)
	w.start(nil)
	finish := func(f Fired) {
		t.Helper()
		for _, dn := range f.Created {
			w.finish(dn, 0)
		}
	}

	// Spring: 02:30 does not exist on the 31st; the run comes at the jump.
	if p, _ := w.ctrl.Plan("v"); LeafName(p.Next) != "20240330T013000Z" {
		t.Fatalf("next %v", p.Next)
	}
	finish(w.fireAt(time.Date(2024, 3, 30, 1, 30, 0, 0, time.UTC)))
	if p, _ := w.ctrl.Plan("v"); LeafName(p.Next) != "20240331T010000Z" {
		t.Fatalf("spring night: next %v, want the jump at 01:00Z", p.Next)
	}
	finish(w.fireAt(time.Date(2024, 3, 31, 1, 0, 0, 0, time.UTC)))

	// Autumn: 02:31 happens twice on 27 October; it runs at the first. The
	// controller restarts there (moving a running one's clock by months would
	// be a late firing).
	w.stop()
	w.update(w.store.Tree.GlobalBackup(), map[string][]string{ldapschema.AttrCronMinute: {"31"}})
	w.clock.Set(time.Date(2024, 10, 26, 12, 0, 0, 0, time.UTC))
	w.start(nil)
	if p, _ := w.ctrl.Plan("v"); LeafName(p.Next) != "20241027T003100Z" {
		t.Fatalf("autumn: next %v", p.Next)
	}
	finish(w.fireAt(time.Date(2024, 10, 27, 0, 31, 0, 0, time.UTC)))
	if p, _ := w.ctrl.Plan("v"); LeafName(p.Next) != "20241028T013100Z" {
		t.Fatalf("after the first 02:31: next %v, want the 28th", p.Next)
	}
	w.clock.Set(time.Date(2024, 10, 27, 1, 31, 0, 0, time.UTC)) // the second 02:31: nothing due
	if f := w.fireAt(time.Date(2024, 10, 28, 1, 31, 0, 0, time.UTC)); len(f.Created) != 1 {
		t.Fatalf("fired %+v", f)
	}
	want := []string{"20240330T013000Z", "20240331T010000Z", "20241027T003100Z", "20241028T013100Z"}
	if got := names(w.leaves("v")); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("leaves %v, want %v", got, want)
	}
}

// Without nightly options the controller creates nothing, whatever the
// directory's schedules say: the CLI and tests drive leaves themselves.
func TestNightlyOff(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 2, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 3))
	w.addVM("h1", "p1", "v", nil)
	w.start(func(o *Options) { o.Nightly = nil })
	if _, ok := w.ctrl.Plan("v"); ok || len(w.ctrl.Plans()) != 0 {
		t.Fatal("plans without nightly operation")
	}
	if w.clock.Waiters() != 0 {
		t.Fatal("a timer is armed without nightly operation")
	}
}
