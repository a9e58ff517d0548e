package control

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

func zurich(t testing.TB) *time.Location { return testenv.Zone(t, "Europe/Zurich") }

func mustSchedule(t testing.TB, loc *time.Location, fields ...string) *Schedule {
	t.Helper()
	s, err := ParseSchedule(specOf(fields...), loc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// specOf builds a Spec from five fields, each "a|b" meaning two attribute values.
func specOf(f ...string) Spec {
	v := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, "|")
	}
	return Spec{Minute: v(f[0]), Hour: v(f[1]), Day: v(f[2]), Month: v(f[3]), DayOfWeek: v(f[4])}
}

// runs lists the planned times in (from, to], as leaf names.
func runs(s *Schedule, from, to time.Time) []string {
	var out []string
	for t := s.Next(from); !t.IsZero() && !t.After(to); t = s.Next(t) {
		out = append(out, LeafName(t))
	}
	return out
}

func utc(y int, m time.Month, d, h, min int) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, time.UTC)
}

func eq(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// In Zurich, 2024-03-31 02:00 CET jumps to 03:00 CEST (01:00Z) and 2024-10-27
// 03:00 CEST falls back to 02:00 CET (01:00Z).
func TestScheduleDaylightSaving(t *testing.T) {
	loc := zurich(t)
	cases := []struct {
		name     string
		fields   []string
		from, to time.Time
		want     []string
	}{
		{"03:00 every night across the spring change", []string{"0", "3", "*", "*", "*"},
			utc(2024, 3, 29, 12, 0), utc(2024, 4, 1, 12, 0),
			[]string{"20240330T020000Z", "20240331T010000Z", "20240401T010000Z"}},
		{"02:30 in the skipped hour runs once, when the clock jumps", []string{"30", "2", "*", "*", "*"},
			utc(2024, 3, 29, 12, 0), utc(2024, 4, 1, 12, 0),
			[]string{"20240330T013000Z", "20240331T010000Z", "20240401T003000Z"}},
		{"every 15 minutes of the skipped hour: once", []string{"*/15", "2", "*", "*", "*"},
			utc(2024, 3, 30, 12, 0), utc(2024, 3, 31, 12, 0),
			[]string{"20240331T010000Z"}},
		{"02:30 in the repeated hour runs once, at its first occurrence", []string{"30", "2", "*", "*", "*"},
			utc(2024, 10, 25, 12, 0), utc(2024, 10, 28, 12, 0),
			[]string{"20241026T003000Z", "20241027T003000Z", "20241028T013000Z"}},
		{"every 20 minutes of hour 2 on the fall-back night: three runs, not six", []string{"*/20", "2", "*", "*", "*"},
			utc(2024, 10, 26, 12, 0), utc(2024, 10, 27, 12, 0),
			[]string{"20241027T000000Z", "20241027T002000Z", "20241027T004000Z"}},
		{"03:00 on the fall-back night is unambiguous", []string{"0", "3", "*", "*", "*"},
			utc(2024, 10, 26, 12, 0), utc(2024, 10, 28, 12, 0),
			[]string{"20241027T020000Z", "20241028T020000Z"}},
		{"hourly across the fall-back: the repeated 02:00 is not run again", []string{"0", "*", "*", "*", "*"},
			utc(2024, 10, 26, 23, 30), utc(2024, 10, 27, 3, 30),
			[]string{"20241027T000000Z", "20241027T020000Z", "20241027T030000Z"}},
		{"hourly across the spring change: 02:00 runs at the jump, then 03:00 is the same instant", []string{"0", "*", "*", "*", "*"},
			utc(2024, 3, 30, 23, 30), utc(2024, 3, 31, 2, 30),
			[]string{"20240331T000000Z", "20240331T010000Z", "20240331T020000Z"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eq(t, "runs", runs(mustSchedule(t, loc, tc.fields...), tc.from, tc.to), tc.want)
		})
	}
}

// The same checks in a zone west of UTC, where the changes fall on other dates
// (2024-03-10 02:00 EST → 03:00 EDT, 2024-11-03 02:00 EDT → 01:00 EST).
func TestScheduleDaylightSavingNewYork(t *testing.T) {
	loc := testenv.Zone(t, "America/New_York")
	eq(t, "skipped 02:30", runs(mustSchedule(t, loc, "30", "2", "*", "*", "*"), utc(2024, 3, 9, 12, 0), utc(2024, 3, 11, 12, 0)),
		[]string{"20240310T070000Z", "20240311T063000Z"})
	eq(t, "repeated 01:30", runs(mustSchedule(t, loc, "30", "1", "*", "*", "*"), utc(2024, 11, 2, 12, 0), utc(2024, 11, 4, 12, 0)),
		[]string{"20241103T053000Z", "20241104T063000Z"})
}

// robfig/cron's own SpecSchedule, for the record: why Schedule does not use
// its zone handling. If a release fixes this, Schedule may use it directly.
func TestRobfigDST(t *testing.T) {
	p := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
	s, err := p.Parse("CRON_TZ=Europe/Zurich 30 2 * * *")
	if err != nil {
		t.Fatal(err)
	}
	var spring, fall []string
	for x := s.Next(utc(2024, 3, 30, 12, 0)); x.Before(utc(2024, 4, 1, 12, 0)); x = s.Next(x) {
		spring = append(spring, LeafName(x))
	}
	for x := s.Next(utc(2024, 10, 26, 12, 0)); x.Before(utc(2024, 10, 28, 0, 0)); x = s.Next(x) {
		fall = append(fall, LeafName(x))
	}
	eq(t, "robfig spring (never on the 31st)", spring, []string{"20240401T003000Z"})
	eq(t, "robfig fall (twice on the 27th)", fall, []string{"20241027T003000Z", "20241027T013000Z"})
}

func TestScheduleMonthEnds(t *testing.T) {
	loc := zurich(t)
	eq(t, "the 31st", runs(mustSchedule(t, loc, "0", "3", "31", "*", "*"), utc(2024, 1, 1, 0, 0), utc(2024, 8, 1, 0, 0)),
		[]string{"20240131T020000Z", "20240331T010000Z", "20240531T010000Z", "20240731T010000Z"})
	eq(t, "29 February, leap years only", runs(mustSchedule(t, loc, "0", "3", "29", "2", "*"), utc(2023, 1, 1, 0, 0), utc(2029, 1, 1, 0, 0)),
		[]string{"20240229T020000Z", "20280229T020000Z"})
	eq(t, "last night of the year into the next", runs(mustSchedule(t, loc, "30", "23", "*", "*", "*"), utc(2024, 12, 30, 12, 0), utc(2025, 1, 1, 23, 0)),
		[]string{"20241230T223000Z", "20241231T223000Z", "20250101T223000Z"})
	eq(t, "the 1st at 00:15 local is the previous day in UTC", runs(mustSchedule(t, loc, "15", "0", "1", "*", "*"), utc(2024, 2, 1, 0, 0), utc(2024, 4, 1, 0, 0)),
		[]string{"20240229T231500Z", "20240331T221500Z"})
	if _, err := ParseSchedule(specOf("0", "3", "30", "2", "*"), loc); !errors.Is(err, ErrBadSchedule) {
		t.Fatalf("30 February: err %v, want ErrBadSchedule", err)
	}
}

func TestScheduleListsAndSteps(t *testing.T) {
	from, to := utc(2024, 6, 2, 22, 0), utc(2024, 6, 9, 22, 0) // Mon 3 .. Sun 9 June, Zurich
	loc := zurich(t)
	oneValue := runs(mustSchedule(t, loc, "0", "3", "*", "*", "1,3,5"), from, to)
	several := runs(mustSchedule(t, loc, "0", "3", "*", "*", "1|3|5"), from, to)
	mixed := runs(mustSchedule(t, loc, "0", "3", "*", "*", "1,3|5"), from, to)
	names := runs(mustSchedule(t, loc, "0", "3", "*", "*", "mon,wed,FRI"), from, to)
	want := []string{"20240603T010000Z", "20240605T010000Z", "20240607T010000Z"}
	eq(t, "\"1,3,5\" as one value", oneValue, want)
	eq(t, "1, 3 and 5 as three values", several, want)
	eq(t, "\"1,3\" and 5", mixed, want)
	eq(t, "names", names, want)

	eq(t, "range of hours with a step", runs(mustSchedule(t, loc, "0", "1-5/2", "*", "*", "*"), from, utc(2024, 6, 3, 12, 0)),
		[]string{"20240602T230000Z", "20240603T010000Z", "20240603T030000Z"})
	eq(t, "minute step", runs(mustSchedule(t, loc, "*/20", "3", "3", "6", "*"), from, to),
		[]string{"20240603T010000Z", "20240603T012000Z", "20240603T014000Z"})
	eq(t, "weekend via 6-7 (7 is Sunday too)", runs(mustSchedule(t, loc, "0", "3", "*", "*", "6-7"), from, to),
		[]string{"20240608T010000Z", "20240609T010000Z"})
	eq(t, "Sunday as 7", runs(mustSchedule(t, loc, "0", "3", "*", "*", "7"), from, to),
		[]string{"20240609T010000Z"})
	// crontab(5): with both day fields restricted, either one matching is enough.
	eq(t, "day of month or day of week", runs(mustSchedule(t, loc, "0", "3", "5", "*", "1"), from, to),
		[]string{"20240603T010000Z", "20240605T010000Z"})
	eq(t, "months by name", runs(mustSchedule(t, loc, "0", "3", "1", "jan,jul", "*"), utc(2024, 1, 1, 0, 0), utc(2025, 1, 1, 0, 0)),
		[]string{"20240101T020000Z", "20240701T010000Z"})
}

func TestScheduleInvalid(t *testing.T) {
	cases := []struct {
		fields []string
		attr   string
	}{
		{[]string{"60", "3", "*", "*", "*"}, "sstCronMinute"},
		{[]string{"0", "25", "*", "*", "*"}, "sstCronHour"},
		{[]string{"0", "3", "0", "*", "*"}, "sstCronDay"},
		{[]string{"0", "3", "*", "13", "*"}, "sstCronMonth"},
		{[]string{"0", "3", "*", "*", "8"}, "sstCronDayOfWeek"},
		{[]string{"0", "three", "*", "*", "*"}, "sstCronHour"},
		{[]string{"*/0", "3", "*", "*", "*"}, "sstCronMinute"},
		{[]string{"0", "3-", "*", "*", "*"}, "sstCronHour"},
		{[]string{"0", "1,,3", "*", "*", "*"}, "sstCronHour"},
		{[]string{"0 3", "*", "*", "*", "*"}, "sstCronMinute"},
		{[]string{"TZ=UTC", "3", "*", "*", "*"}, "sstCronMinute"},
		{[]string{"@daily", "3", "*", "*", "*"}, "sstCronMinute"},
		{[]string{"0", "", "*", "*", "*"}, "sstCronHour"},
		{[]string{"0", "3", "*", "*", ""}, "sstCronDayOfWeek"},
	}
	for _, tc := range cases {
		_, err := ParseSchedule(specOf(tc.fields...), time.UTC)
		var fe *FieldError
		if !errors.As(err, &fe) || !errors.Is(err, ErrBadSchedule) {
			t.Errorf("%q: err %v, want a FieldError", tc.fields, err)
			continue
		}
		if fe.Attr != tc.attr || !strings.Contains(err.Error(), tc.attr) {
			t.Errorf("%q: error %q names %s, want %s", tc.fields, err, fe.Attr, tc.attr)
		}
	}
}

func TestScheduleLast(t *testing.T) {
	loc := zurich(t)
	s := mustSchedule(t, loc, "0", "3", "*", "*", "*")
	now := utc(2024, 6, 3, 4, 30) // 06:30 CEST
	if got, ok := s.Last(now.Add(-6*time.Hour), now); !ok || LeafName(got) != "20240603T010000Z" {
		t.Fatalf("last within 6h: %v %v", got, ok)
	}
	if got, ok := s.Last(now.Add(-time.Hour), now); ok {
		t.Fatalf("last within 1h: %v, want none", got)
	}
	// Bounds are inclusive: a run planned exactly now counts.
	at := utc(2024, 6, 3, 1, 0)
	if got, ok := s.Last(at.Add(-time.Hour), at); !ok || !got.Equal(at) {
		t.Fatalf("run planned now: %v %v", got, ok)
	}
	// Several runs in the window: the latest.
	every := mustSchedule(t, loc, "*/10", "*", "*", "*", "*")
	if got, _ := every.Last(now.Add(-6*time.Hour), now); !got.Equal(now) {
		t.Fatalf("every 10 minutes: last %v, want %v", got, now)
	}
}

func TestScheduleString(t *testing.T) {
	s := mustSchedule(t, zurich(t), "0", "3", "*", "*", "1|3")
	if got := s.String(); got != "0 3 * * 1,3 Europe/Zurich" {
		t.Fatalf("String() = %q", got)
	}
}
