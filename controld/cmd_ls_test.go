package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
)

func TestPrintBackups(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Fatal(err)
	}
	bs := []control.Backup{
		{Leaf: "20240601T010000Z", Planned: time.Date(2024, 6, 1, 1, 0, 0, 0, time.UTC), Mode: "finished",
			SizeBytes: 75316594, Duration: 5604 * time.Millisecond, Downtime: 2899 * time.Millisecond},
		{Leaf: "20240602T010000Z", Planned: time.Date(2024, 6, 2, 1, 0, 0, 0, time.UTC), Mode: "finished",
			ReturnValue: 5, SizeBytes: -1},
		{Leaf: "yesterday", Mode: "snapshotting", SizeBytes: -1},
	}
	var b bytes.Buffer
	if err := printBackups(&b, bs, loc); err != nil {
		t.Fatal(err)
	}
	want := `DATE                   LEAF              MODE          RV                             SIZE      DURATION
2024-06-01 03:00 CEST  20240601T010000Z  finished      0                              71.8 MiB  5.6s
2024-06-02 03:00 CEST  20240602T010000Z  finished      5 (cannot save machine state)  -         -
-                      yesterday         snapshotting  0                              -         -
`
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	if err := printBackupsJSON(&b, bs); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0]["sizeBytes"] != 75316594.0 || got[0]["durationSeconds"] != 5.604 ||
		got[1]["return"] != "cannot save machine state" || got[1]["sizeBytes"] != nil || got[2]["planned"] != nil {
		t.Fatalf("JSON: %s", b.String())
	}
}

func TestPrintSchedule(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Fatal(err)
	}
	s, err := control.ParseSchedule(control.Spec{Minute: []string{"0"}, Hour: []string{"3"}, Day: []string{"*"},
		Month: []string{"*"}, DayOfWeek: []string{"1,3", "5"}}, loc)
	if err != nil {
		t.Fatal(err)
	}
	plans := []control.Plan{
		{VM: "a", Host: "h1", Status: control.PlanScheduled, Schedule: s, Level: "vm", ScheduleLevel: "global",
			Next: time.Date(2024, 6, 3, 3, 0, 0, 0, loc)},
		{VM: "b", Host: "h2", Status: control.PlanInvalid, Level: "vm", Err: errors.New(`sstCronHour "25": too big`)},
		{VM: "c", Host: "h2", Status: control.PlanNoConfig},
	}
	var b bytes.Buffer
	if err := printSchedule(&b, plans); err != nil {
		t.Fatal(err)
	}
	want := `VM  HOST  NEXT                   LEAF              SCHEDULE       FROM                 STATUS
a   h1    2024-06-03 03:00 CEST  20240603T010000Z  0 3 * * 1,3,5  vm, schedule global  scheduled
b   h2    -                      -                 -              vm                   invalid: sstCronHour "25": too big
c   h2    -                      -                 -              -                    no-config
`
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := printScheduleJSON(&b, plans); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"leaf": "20240603T010000Z"`) || !strings.Contains(b.String(), `"timezone": "Europe/Zurich"`) ||
		!strings.Contains(b.String(), `"error": "sstCronHour \"25\": too big"`) {
		t.Fatalf("JSON: %s", b.String())
	}
}

// Backups in chunks storage show their logical size and how many times it
// is what they added to the store.
func TestPrintChunkedBackups(t *testing.T) {
	bs := []control.Backup{
		{Leaf: "20240601T010000Z", Mode: "finished", SizeBytes: 1 << 20, LogicalBytes: 64 << 20, Duration: time.Second},
		{Leaf: "20240531T010000Z", Mode: "finished", SizeBytes: 2 << 30, Duration: time.Second},
	}
	var b bytes.Buffer
	if err := printBackups(&b, bs, time.UTC); err != nil {
		t.Fatal(err)
	}
	want := `DATE  LEAF              MODE      RV  SIZE     DURATION  LOGICAL   DEDUP
-     20240601T010000Z  finished  0   1.0 MiB  1s        64.0 MiB  64.0x
-     20240531T010000Z  finished  0   2.0 GiB  1s        -         -
`
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := printBackupsJSON(&b, bs); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got[0]["logicalBytes"] != float64(64<<20) || got[1]["logicalBytes"] != nil {
		t.Fatalf("JSON: %s", b.String())
	}
}
