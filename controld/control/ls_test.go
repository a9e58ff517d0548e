package control

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

func TestParseExecutionTimes(t *testing.T) {
	secs, bytes := ParseExecutionTimes([]string{
		"snapshot: 5.097", "downtime: 2.899", "merge: 0.239", "retain: 0.268", "retainBytes: 75316594",
		"garbage", "retain: soon", ": 3",
	})
	if len(secs) != 4 || secs["snapshot"] != 5.097 || secs["downtime"] != 2.899 || secs["merge"] != 0.239 || secs["retain"] != 0.268 {
		t.Fatalf("seconds %v", secs)
	}
	if len(bytes) != 1 || bytes["retainBytes"] != 75316594 {
		t.Fatalf("bytes %v", bytes)
	}
}

func TestListBackups(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 0, 0, 0, 0, time.UTC))
	w.addVM("h1", "p1", "v", nil)
	w.addVM("h1", "p1", "empty", nil)
	done := w.addLeaf("v", "20240602T010000Z", "finished", 0)
	w.update(done, map[string][]string{ldapschema.AttrExecutionTime: {
		"snapshot: 5.097", "downtime: 2.899", "merge: 0.239", "retain: 0.268", "retainBytes: 75316594"}})
	w.addLeaf("v", "20240601T010000Z", "finished", int(ldapschema.RCCannotSaveState))
	w.addLeaf("v", "20240603T010000Z", "snapshotting", 0)

	bs, err := ListBackups(w.store, "v")
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 3 || bs[0].Leaf != "20240601T010000Z" || bs[2].Leaf != "20240603T010000Z" {
		t.Fatalf("backups %+v, want three, oldest first", bs)
	}
	if b := bs[0]; b.ReturnValue != 5 || b.SizeBytes != -1 || b.Duration != 0 {
		t.Fatalf("failed one: %+v", b)
	}
	b := bs[1]
	if b.Mode != "finished" || b.SizeBytes != 75316594 || b.Duration != 5604*time.Millisecond ||
		b.Downtime != 2899*time.Millisecond || !b.Planned.Equal(time.Date(2024, 6, 2, 1, 0, 0, 0, time.UTC)) {
		t.Fatalf("good one: %+v", b)
	}
	if bs, err := ListBackups(w.store, "empty"); err != nil || len(bs) != 0 {
		t.Fatalf("VM without backups: %v %v", bs, err)
	}
	if _, err := ListBackups(w.store, "ghost"); !errors.Is(err, ErrUnknownVM) {
		t.Fatalf("unknown VM: %v", err)
	}
	if _, err := ListBackups(w.store, "../x"); err == nil {
		t.Fatal("an unsafe name was accepted")
	}
}

func TestListSchedule(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 0, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 3))
	w.addPool("p2")
	w.addConfig(w.store.Tree.PoolBackup("p2"), nightly("30", "1", 3))
	w.addVM("h1", "p1", "global", nil)
	w.addVM("h1", "p2", "pool", nil)
	bad := nightly("0", "3", 3)
	bad.CronDayOfWeek = []string{"1,9"}
	w.addVM("h1", "p1", "bad", &bad)
	off := nightly("0", "3", 3)
	off.Exclude = true
	w.addVM("h1", "p1", "off", &off)

	ps, err := ListSchedule(w.store, w.loc, w.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.VM+" "+string(p.Status)+" "+LeafName(p.Next))
	}
	want := []string{
		"global scheduled 20240603T010000Z",
		"pool scheduled 20240603T233000Z", // 01:30 has passed today
		"bad invalid 00010101T000000Z",
		"off excluded 00010101T000000Z",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("schedule:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ps[2].Err == nil || !strings.Contains(ps[2].Err.Error(), "sstCronDayOfWeek") {
		t.Fatalf("bad VM's error: %v", ps[2].Err)
	}
	if ps[1].ScheduleSource != w.store.Tree.PoolBackup("p2") || ps[1].Level != "pool" || ps[0].Level != "global" || ps[2].Level != "vm" {
		t.Fatalf("levels: %+v", ps)
	}
}
