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

func TestMergeExecutionTimes(t *testing.T) {
	got := mergeExecutionTimes([]string{"snapshot: 1.8", "downtime: 2.9", "progress: x"}, []string{"progress: y", "merge: 0.2"})
	want := []string{"snapshot: 1.8", "downtime: 2.9", "progress: y", "merge: 0.2"}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
}
