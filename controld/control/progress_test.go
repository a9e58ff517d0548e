package control

import (
	"testing"
	"time"
)

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 75316594: "71.8 MiB", 5 << 40: "5.0 TiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestLeafProgress(t *testing.T) {
	p, ok := LeafProgress([]string{"snapshot: 1.2", "progress: retain 120.0 MiB of 480.0 MiB, 85.3 MiB/s, 5s left"})
	if !ok || p.Step != "retain" || p.DoneMiB != 120 || p.TotalMiB != 480 || p.MiBps != 85.3 || p.Left != "5s" || p.Fraction() != 0.25 {
		t.Fatalf("got %+v, %v", p, ok)
	}
	p, ok = LeafProgress([]string{"progress: something else"})
	if !ok || p.Text != "something else" || p.Fraction() != 0 {
		t.Fatalf("unreadable line: got %+v, %v", p, ok)
	}
	if _, ok := LeafProgress([]string{"snapshot: 1.2"}); ok {
		t.Fatal("progress found where there is none")
	}
}

func TestLastPlanned(t *testing.T) {
	s, err := ParseSchedule(Spec{Minute: []string{"0"}, Hour: []string{"3"}, Day: []string{"*"}, Month: []string{"*"}, DayOfWeek: []string{"1"}}, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	// Sunday 2026-11-29 12:00: the last Monday 03:00 is the 23rd.
	got := lastPlanned(s, time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	if want := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Fatalf("lastPlanned = %v, want %v", got, want)
	}
}
