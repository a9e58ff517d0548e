package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
)

func runSchedule(_ context.Context, in *invocation) error {
	cfg, store := in.cfg, in.store
	plans, err := control.ListSchedule(store, cfg.location(), time.Now())
	if err != nil {
		return backendError{err}
	}
	if in.json {
		err = printScheduleJSON(os.Stdout, plans)
	} else {
		err = printSchedule(os.Stdout, plans)
	}
	if err != nil {
		return err
	}
	// Scripts and monitoring notice a broken schedule by the exit code.
	invalid := 0
	for _, p := range plans {
		if p.Status == control.PlanInvalid {
			invalid++
		}
	}
	if invalid > 0 {
		return fmt.Errorf("%d VM(s) have a configuration or schedule that cannot be read", invalid)
	}
	return nil
}

// scheduleJSON is one VM in `controld schedule -json`.
type scheduleJSON struct {
	VM             string     `json:"vm"`
	Host           string     `json:"host"`
	Pool           string     `json:"pool"`
	Status         string     `json:"status"`
	Next           *time.Time `json:"next,omitempty"` // in the configured zone
	Leaf           string     `json:"leaf,omitempty"` // the leaf the next run creates
	Schedule       string     `json:"schedule,omitempty"`
	Timezone       string     `json:"timezone,omitempty"`
	Iterations     int        `json:"iterations,omitempty"`
	Source         string     `json:"source,omitempty"`
	ScheduleSource string     `json:"scheduleSource,omitempty"`
	Error          string     `json:"error,omitempty"`
}

func printScheduleJSON(w io.Writer, plans []control.Plan) error {
	out := make([]scheduleJSON, 0, len(plans))
	for _, p := range plans {
		j := scheduleJSON{VM: p.VM, Host: p.Host, Pool: p.Pool, Status: string(p.Status), Iterations: p.Iterations,
			Source: p.Source, ScheduleSource: p.ScheduleSource}
		if !p.Next.IsZero() {
			next := p.Next
			j.Next, j.Leaf = &next, control.LeafName(next)
		}
		if p.Schedule != nil {
			j.Schedule, j.Timezone = p.Schedule.Expr(), p.Schedule.Location().String()
		}
		if p.Err != nil {
			j.Error = p.Err.Error()
		}
		out = append(out, j)
	}
	return printJSON(w, out)
}

func printSchedule(w io.Writer, plans []control.Plan) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tHOST\tNEXT\tLEAF\tSCHEDULE\tFROM\tSTATUS")
	for _, p := range plans {
		next, leaf, sched, from := "-", "-", "-", p.Level
		if !p.Next.IsZero() {
			next, leaf = p.Next.Format("2006-01-02 15:04 MST"), control.LeafName(p.Next)
		}
		if p.Schedule != nil {
			sched = p.Schedule.Expr()
		}
		if p.ScheduleLevel != "" && p.ScheduleLevel != p.Level {
			from += ", schedule " + p.ScheduleLevel
		}
		if from == "" {
			from = "-"
		}
		status := string(p.Status)
		if p.Err != nil {
			status += ": " + p.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.VM, p.Host, next, leaf, sched, from, status)
	}
	return tw.Flush()
}
