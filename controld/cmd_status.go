package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/stoneycloud/stoney-conductor/controld/control"
)

func runStatus(_ context.Context, in *invocation) error {
	store := in.store
	st, err := control.Status(store)
	if err != nil {
		return backendError{err}
	}
	if in.json {
		return printJSON(os.Stdout, st)
	}
	return printStatus(os.Stdout, st)
}

func printStatus(w io.Writer, st []control.VMStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tNODE\tLEAF\tMODE\tRV\tDETAIL")
	for _, s := range st {
		for _, r := range s.Running {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", s.VM, s.Node, r.Leaf, r.Mode, r.ReturnValue, r.Progress)
		}
		if l := s.Last; l != nil {
			detail := strings.Join(l.Times, ", ")
			if l.ReturnValue != 0 {
				detail = l.Meaning
			}
			if l.LastRestore != "" {
				detail = strings.TrimPrefix(detail+"; ", "; ") + "last restore: " + l.LastRestore
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", s.VM, s.Node, l.Leaf, l.Mode, l.ReturnValue, detail)
		} else if len(s.Running) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\tno backup yet\t\t\n", s.VM, s.Node)
		}
	}
	return tw.Flush()
}
