package node

import (
	"testing"
	"time"
)

func TestMeterLine(t *testing.T) {
	m := &meter{step: "retain", total: 512 << 20, start: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	got := m.line(128<<20, m.start.Add(2*time.Second))
	want := "retain 128.0 MiB of 512.0 MiB, 64.0 MiB/s, 6s left"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := m.line(0, m.start); got != "retain 0.0 MiB of 512.0 MiB, 0.0 MiB/s, ? left" {
		t.Fatalf("at the start: %q", got)
	}
}

// A step that stalls must fall silent, so that controld's deadline, which
// counts from the leaf's last write, can end it; one that moves on writes,
// but not more often than every.
func TestMeterWritesOnlyWhenWorkMovesOn(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &meter{every: time.Second}
	for _, c := range []struct {
		done int64
		at   time.Duration
		want bool
	}{
		{0, 0, false},                       // nothing done yet
		{10, 0, true},                       // moved on
		{20, 500 * time.Millisecond, false}, // too soon
		{20, 2 * time.Second, true},         // moved on since the last write
		{20, 10 * time.Second, false},       // stalled: silent however long
		{20, time.Hour, false},              // still stalled
		{21, time.Hour + time.Second, true}, // moving again
	} {
		if got := m.due(c.done, t0.Add(c.at)); got != c.want {
			t.Fatalf("done %d at %v: write %v, want %v", c.done, c.at, got, c.want)
		}
	}
}

// A merge's total is what the hypervisor reports, and shows in the line.
func TestMeterMeasuredTotal(t *testing.T) {
	m := &meter{step: "merge", start: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), every: time.Hour}
	m.last = time.Now().Add(time.Hour) // no write: this meter has no job
	m.measured()(1<<20, 64<<20)
	if got := m.line(32<<20, m.start.Add(4*time.Second)); got != "merge 32.0 MiB of 64.0 MiB, 8.0 MiB/s, 4s left" {
		t.Fatalf("%q", got)
	}
}
