package control

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Spec is a schedule's five cron fields as the directory holds them. Each
// attribute may carry one value or several, and a value may itself be a
// comma-separated list: the original web UI writes "1,3,5" as one value.
type Spec struct {
	Minute, Hour, Day, Month, DayOfWeek []string
}

// SpecOf returns the cron fields of a backup configuration.
func SpecOf(c ldapschema.BackupConfig) Spec {
	return Spec{Minute: c.CronMinute, Hour: c.CronHour, Day: c.CronDay, Month: c.CronMonth, DayOfWeek: c.CronDayOfWeek}
}

// ErrBadSchedule is wrapped by every error ParseSchedule returns.
var ErrBadSchedule = errors.New("invalid backup schedule")

// FieldError says which cron attribute is wrong and why.
type FieldError struct {
	Attr  string // e.g. sstCronHour
	Value string // the attribute's values, joined with ","
	Err   error
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s %q: %v", e.Attr, e.Value, e.Err)
}

// Unwrap lets errors.Is find ErrBadSchedule.
func (e *FieldError) Unwrap() []error { return []error{ErrBadSchedule, e.Err} }

// Schedule is a parsed cron schedule in a time zone. Its times are planned
// backup times; a leaf is named after one in UTC (LeafName).
//
// robfig/cron's own SpecSchedule steps through the zone's clock and so runs a
// job in the repeated hour of a daylight-saving change twice and one in the
// skipped hour not at all (TestRobfigDST shows both). Schedule instead matches
// the fields against wall-clock readings and maps each match to one instant:
//   - a reading that happens twice (the repeated hour) runs at its first
//     occurrence only;
//   - a reading that never happens (the skipped hour) runs once, at the
//     instant the clock jumps over it, as cron(8) does.
type Schedule struct {
	wall *cron.SpecSchedule // matched against wall-clock readings held as UTC
	loc  *time.Location
	expr string
}

// Each field is parsed alone first, so an error names its attribute.
var fieldParsers = []struct {
	attr string
	opt  cron.ParseOption
}{
	{ldapschema.AttrCronMinute, cron.Minute},
	{ldapschema.AttrCronHour, cron.Hour},
	{ldapschema.AttrCronDay, cron.Dom},
	{ldapschema.AttrCronMonth, cron.Month},
	{ldapschema.AttrCronDayOfWeek, cron.Dow},
}

var specParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// fieldChars is what a cron field may hold: numbers, names (mon, jan), * ? , - /.
// Anything else (blanks, "=", "@") would let a value change the spec's shape.
var fieldChars = regexp.MustCompile(`^[0-9A-Za-z*?/-]+$`)

// sundaySeven matches the day-of-week forms that use 7 for Sunday, which
// crontab(5) allows and robfig/cron does not: "7" and "N-7".
var sundaySeven = regexp.MustCompile(`^(?:([0-6])-)?7$`)

// ParseSchedule checks and parses the five fields; times are read in loc
// (time.Local if nil). All five must be present, as sstCronObjectClass
// requires. A schedule that can never fire (the 30th of February) is refused.
func ParseSchedule(s Spec, loc *time.Location) (*Schedule, error) {
	if loc == nil {
		loc = time.Local
	}
	values := [][]string{s.Minute, s.Hour, s.Day, s.Month, s.DayOfWeek}
	fields := make([]string, len(values))
	for i, fp := range fieldParsers {
		f, err := normalizeField(values[i], fp.attr == ldapschema.AttrCronDayOfWeek)
		if err == nil {
			_, err = cron.NewParser(fp.opt).Parse(f)
		}
		if err != nil {
			return nil, &FieldError{Attr: fp.attr, Value: strings.Join(values[i], ","), Err: err}
		}
		fields[i] = f
	}
	expr := strings.Join(fields, " ")
	parsed, err := specParser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBadSchedule, expr, err)
	}
	spec, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("%w: %q: unexpected schedule type %T", ErrBadSchedule, expr, parsed)
	}
	spec.Location = time.UTC // wall-clock readings, no zone rules
	// 2000 is a leap year, so only dates that exist in no year fail here.
	if spec.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return nil, fmt.Errorf("%w: %q never falls on a real date", ErrBadSchedule, expr)
	}
	return &Schedule{wall: spec, loc: loc, expr: expr}, nil
}

// normalizeField joins an attribute's values into one cron field.
func normalizeField(vals []string, dow bool) (string, error) {
	var parts []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				return "", errors.New("empty list element")
			}
			if !fieldChars.MatchString(p) {
				return "", errors.New("only digits, names and * ? , - / are allowed")
			}
			if dow {
				if m := sundaySeven.FindStringSubmatch(p); m != nil {
					p = "0"
					if m[1] != "" {
						p = m[1] + "-6,0"
					}
				}
			}
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return "", errors.New("missing")
	}
	return strings.Join(parts, ","), nil
}

// String is the normalized expression and the zone, e.g. "0 3 * * * Europe/Zurich".
func (s *Schedule) String() string { return s.expr + " " + s.loc.String() }

// Expr is the normalized five-field expression.
func (s *Schedule) Expr() string { return s.expr }

// Location is the zone the fields are read in.
func (s *Schedule) Location() *time.Location { return s.loc }

// maxSteps bounds the candidates Next looks at: a repeated hour skips at most
// one per minute of it.
const maxSteps = 10000

// Next returns the first planned time strictly after after, in the schedule's
// zone, or the zero time if there is none within robfig/cron's five years.
func (s *Schedule) Next(after time.Time) time.Time {
	w := wallOf(after.In(s.loc))
	for i := 0; i < maxSteps; i++ {
		c := s.wall.Next(w)
		if c.IsZero() {
			return time.Time{}
		}
		if t := s.instant(c); t.After(after) {
			return t
		}
		w = c
	}
	return time.Time{}
}

// Last returns the latest planned time in [from, to], if any.
func (s *Schedule) Last(from, to time.Time) (time.Time, bool) {
	var last time.Time
	t := s.Next(from.Add(-time.Nanosecond))
	for i := 0; i < 100*maxSteps && !t.IsZero() && !t.After(to); i++ {
		last = t
		t = s.Next(t)
	}
	return last, !last.IsZero()
}

// wallOf is t's clock reading in its own zone, held as a UTC time.
func wallOf(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// instant maps a wall-clock reading c (held as UTC) to the instant it is
// planned for in s.loc: its first occurrence, or, if the clock skips it, the
// instant of the jump.
func (s *Schedule) instant(c time.Time) time.Time {
	// The zones in force within 15 hours of c (no offset is larger than 14h).
	type zone struct {
		start time.Time // zero for the first one
		off   int
	}
	var zones []zone
	for t, first := c.Add(-15*time.Hour), true; t.Before(c.Add(15 * time.Hour)); first = false {
		lt := t.In(s.loc)
		_, off := lt.Zone()
		z := zone{off: off}
		if !first {
			z.start = t
		}
		zones = append(zones, z)
		_, end := lt.ZoneBounds()
		if end.IsZero() || !end.After(t) {
			break
		}
		t = end
	}
	var best time.Time
	for _, z := range zones {
		i := c.Add(-time.Duration(z.off) * time.Second)
		if wallOf(i.In(s.loc)).Equal(c) && (best.IsZero() || i.Before(best)) {
			best = i
		}
	}
	if !best.IsZero() {
		return best.In(s.loc)
	}
	// c falls into a gap: find the jump that skips it.
	for k := 1; k < len(zones); k++ {
		b := zones[k].start
		before := b.Add(time.Duration(zones[k-1].off) * time.Second)
		after := b.Add(time.Duration(zones[k].off) * time.Second)
		if !c.Before(before.UTC()) && c.Before(after.UTC()) {
			return b.In(s.loc)
		}
	}
	// Not reached for real zone data; fall back to Go's normalization.
	return time.Date(c.Year(), c.Month(), c.Day(), c.Hour(), c.Minute(), c.Second(), 0, s.loc)
}

// LeafName is the name of the leaf for a planned time: the time in UTC.
func LeafName(planned time.Time) string { return fsm.FormatTime(planned) }
