package fsm

import (
	"errors"
	"testing"
	"time"
)

func TestFormatTimeIsUTC(t *testing.T) {
	zurich := time.FixedZone("CEST", 2*3600)
	got := FormatTime(time.Date(2012, 10, 2, 3, 0, 0, 999, zurich))
	if got != "20121002T010000Z" {
		t.Fatalf("FormatTime = %q, want 20121002T010000Z (the seed's 03:00 local)", got)
	}
}

func TestParseTime(t *testing.T) {
	got, err := ParseTime("20121002T014513Z")
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2012, 10, 2, 1, 45, 13, 0, time.UTC)
	if !got.Equal(want) || got.Location() != time.UTC {
		t.Fatalf("ParseTime = %v, want %v in UTC", got, want)
	}
	if back := FormatTime(got); back != "20121002T014513Z" {
		t.Fatalf("round trip gave %q", back)
	}
}

func TestIsLeafName(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"20121002T010000Z", true},
		{"20240229T235959Z", true}, // leap day
		{"20230229T000000Z", false},
		{"20121302T010000Z", false}, // month 13
		{"20121002T240000Z", false},
		{"20121002T010060Z", false},
		{"20121002T010000", false},
		{"20121002t010000Z", false},
		{"20121002T010000z", false},
		{"2012-10-02T01:00:00Z", false},
		{"2012100T2010000Z", false},
		{"+0121002T010000Z", false},
		{" 20121002T010000Z", false},
		{"20121002T010000Z ", false},
		{"0", false},
		{"", false},
		{"backup", false},
	} {
		if _, err := ParseTime(tc.s); (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrBadTime) {
			t.Errorf("ParseTime(%q) error = %v", tc.s, err)
		}
	}
}
