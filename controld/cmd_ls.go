package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

func runLs(_ context.Context, in *invocation) error {
	backups, err := control.ListBackups(in.store, in.args[0])
	switch {
	case errors.Is(err, ldapschema.ErrUnsafeName):
		return usageError{err}
	case errors.Is(err, control.ErrUnknownVM):
		return err
	case err != nil:
		return backendError{err}
	}
	if in.json {
		return printBackupsJSON(os.Stdout, backups)
	}
	return printBackups(os.Stdout, backups, in.cfg.location())
}

// backupJSON is one leaf in `controld ls -json`.
type backupJSON struct {
	Leaf            string             `json:"leaf"`
	Planned         *time.Time         `json:"planned,omitempty"` // UTC
	Mode            string             `json:"mode"`
	State           string             `json:"state"`
	ReturnValue     int                `json:"returnValue"`
	Return          string             `json:"return"`                 // the code's text
	SizeBytes       *int64             `json:"sizeBytes,omitempty"`    // absent until retained
	LogicalBytes    int64              `json:"logicalBytes,omitempty"` // chunks storage: disks and state, of which sizeBytes were new
	DurationSeconds float64            `json:"durationSeconds"`        // snapshot + merge + retain
	DowntimeSeconds float64            `json:"downtimeSeconds"`
	Steps           map[string]float64 `json:"steps,omitempty"`
	LastRestore     string             `json:"lastRestore,omitempty"` // the last restore's outcome
	DN              string             `json:"dn"`
}

func printBackupsJSON(w io.Writer, backups []control.Backup) error {
	out := make([]backupJSON, 0, len(backups))
	for _, b := range backups {
		j := backupJSON{Leaf: b.Leaf, Mode: b.Mode, State: b.State, ReturnValue: b.ReturnValue,
			Return: ldapschema.ReturnCode(b.ReturnValue).String(), DurationSeconds: b.Duration.Seconds(),
			DowntimeSeconds: b.Downtime.Seconds(), Steps: b.Steps, LastRestore: b.LastRestore, DN: b.DN,
			LogicalBytes: b.LogicalBytes}
		if !b.Planned.IsZero() {
			p := b.Planned
			j.Planned = &p
		}
		if b.SizeBytes >= 0 {
			n := b.SizeBytes
			j.SizeBytes = &n
		}
		out = append(out, j)
	}
	return printJSON(w, out)
}

func printBackups(w io.Writer, backups []control.Backup, loc *time.Location) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// The last restore's column appears once a leaf has such a record.
	// The last restore's column appears once a leaf has such a record, the
	// logical size and the ratio to what was added once one is in chunks storage.
	restores, chunked := false, false
	for _, b := range backups {
		restores = restores || b.LastRestore != ""
		chunked = chunked || b.LogicalBytes > 0
	}
	head := "DATE\tLEAF\tMODE\tRV\tSIZE\tDURATION"
	if chunked {
		head += "\tLOGICAL\tDEDUP"
	}
	if restores {
		head += "\tLAST RESTORE"
	}
	fmt.Fprintln(tw, head)
	for _, b := range backups {
		date, size, dur := "-", "-", "-"
		if !b.Planned.IsZero() {
			date = b.Planned.In(loc).Format("2006-01-02 15:04 MST")
		}
		if b.SizeBytes >= 0 {
			size = control.HumanBytes(b.SizeBytes)
		}
		if b.Duration > 0 {
			dur = b.Duration.Round(100 * time.Millisecond).String()
		}
		rv := fmt.Sprint(b.ReturnValue)
		if b.ReturnValue != 0 {
			rv += " (" + ldapschema.ReturnCode(b.ReturnValue).String() + ")"
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", date, b.Leaf, b.Mode, rv, size, dur)
		if chunked {
			logical, ratio := "-", "-"
			if b.LogicalBytes > 0 {
				logical = control.HumanBytes(b.LogicalBytes)
				if b.SizeBytes > 0 {
					ratio = fmt.Sprintf("%.1fx", float64(b.LogicalBytes)/float64(b.SizeBytes))
				}
			}
			line += "\t" + logical + "\t" + ratio
		}
		if restores {
			last := b.LastRestore
			if last == "" {
				last = "-"
			}
			line += "\t" + last
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}
