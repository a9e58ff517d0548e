package recovery

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// printFound is what the scan found, before any question: the roots, what
// is broken or not a backup, and what the directory knows already.
func printFound(w io.Writer, plan *Plan) {
	printRoots(w, "The recovery scanned these backup roots:", plan.Roots)
	if b := plan.Broken(); len(b) > 0 {
		fmt.Fprintln(w, "Broken backups, skipped:")
		for _, it := range b {
			fmt.Fprintf(w, " - VM %q backup %s (%s): %s\n", it.VM, it.Leaf, it.Dir, strings.Join(it.Problems, "; "))
		}
	}
	printStrays(w, "Not backups, skipped:", plan.Strays)
	var known, different, copies []string
	for _, v := range plan.VMs {
		var names []string
		for _, it := range v.Iterations {
			switch it.Status {
			case StatusKnown:
				names = append(names, it.Leaf)
			case StatusKnownDifferent:
				different = append(different, fmt.Sprintf(" - VM %q backup %s: the directory has it as %s; left alone", v.VM, it.Leaf, it.Directory))
			case StatusDuplicate:
				copies = append(copies, fmt.Sprintf(" - VM %q backup %s (%s): %s", v.VM, it.Leaf, it.Dir, it.Directory))
			}
		}
		if len(names) > 0 {
			known = append(known, fmt.Sprintf(" - VM %q: %s", v.VM, strings.Join(names, ", ")))
		}
	}
	printList(w, "Already in the directory:", known)
	printList(w, "In the directory in another state:", different)
	printList(w, "Copies of backups found in an earlier root, skipped:", copies)
}

// printUnknown lists the new backups per VM and says for each VM what
// the import does, or why it will not.
func printUnknown(w io.Writer, plan *Plan, declined map[string]bool) {
	var lines []string
	for _, v := range plan.VMs {
		its := v.New()
		if len(its) == 0 {
			continue
		}
		var names []string
		for _, it := range its {
			names = append(names, it.Leaf)
		}
		line := fmt.Sprintf(" - VM %q: %s", v.VM, strings.Join(names, ", "))
		var how []string
		switch {
		case leftByChoice(v, declined):
			how = append(how, "skipped as you chose: its entry is not re-created")
		case len(v.Blockers) > 0:
			how = append(how, "held back: see what is missing below")
		default:
			if v.Entry == EntryRecreate {
				how = append(how, "VM entry and disks re-created from the LDIF saved with "+v.LDIFLeaf)
			}
			switch v.BackupEntry {
			case BackupEntryFromLDIF:
				how = append(how, "its backup configuration re-created from the LDIF saved with "+v.LDIFLeaf)
			case BackupEntryContainer:
				how = append(how, "configuration "+v.Config)
			}
		}
		if len(how) > 0 {
			line += " (" + strings.Join(how, "; ") + ")"
		}
		lines = append(lines, line)
	}
	if !printList(w, "The following unknown backups have been found:", lines) {
		fmt.Fprintln(w, "No unknown backups were found.")
	}
}

// leftByChoice: the operator answered no to re-creating the VM's entry,
// and nothing else stands in its way.
func leftByChoice(v *VMPlan, declined map[string]bool) bool {
	ok, answered := declined[v.VM]
	return answered && !ok && v.Blocked(BlockVMMissing)
}

// printNotes lists what to know about the VMs that will be imported.
func printNotes(w io.Writer, plan *Plan, declined map[string]bool) {
	var lines []string
	for _, v := range plan.VMs {
		if len(v.New()) == 0 || leftByChoice(v, declined) {
			continue
		}
		for _, n := range v.Notes {
			lines = append(lines, fmt.Sprintf(" - VM %q: %s", v.VM, n))
		}
		for _, it := range v.New() {
			for _, n := range it.Notes {
				lines = append(lines, fmt.Sprintf(" - VM %q backup %s: %s", v.VM, it.Leaf, n))
			}
		}
	}
	printList(w, "Please note:", lines)
}

// printMissing lists what stands in the way, leaving out VMs the
// operator chose not to re-create; it reports whether anything was listed.
func printMissing(w io.Writer, plan *Plan, declined map[string]bool) bool {
	var lines []string
	for _, b := range plan.Blockers {
		lines = append(lines, " - "+b.Message)
	}
	for _, v := range plan.VMs {
		if len(v.New()) == 0 || leftByChoice(v, declined) {
			continue
		}
		for _, b := range v.Blockers {
			lines = append(lines, " - "+b.Message)
		}
	}
	return printList(w, "You are currently missing the following:", lines)
}

// printResults says what the import did, per VM.
func printResults(w io.Writer, results []ImportResult) {
	failed := 0
	for _, r := range results {
		if r.Error != "" {
			failed++
			state := "rolled back"
			if !r.RolledBack {
				state = "NOT fully rolled back"
			}
			fmt.Fprintf(w, " - VM %q: import failed, %s: %s\n", r.VM, state, r.Error)
			continue
		}
		fmt.Fprintf(w, " - VM %q: %d backup(s) recovered (%s)\n", r.VM, len(r.Leaves), strings.Join(r.Leaves, ", "))
	}
	switch {
	case len(results) == 0:
	case failed == 0:
		fmt.Fprintln(w, "All unknown backups have now been recovered!")
	default:
		fmt.Fprintf(w, "%d of %d VMs failed to import; nothing of theirs was kept.\n", failed, len(results))
	}
}

// printCheck is the report of --check.
func printCheck(w io.Writer, r *CheckReport) {
	printRoots(w, "Scanned backup roots:", r.Roots)
	fmt.Fprintf(w, "%d finished backups in the directory checked.\n", r.Checked)
	if len(r.LeavesWithoutFiles) > 0 {
		fmt.Fprintln(w, "Backups in the directory whose files are gone or incomplete:")
		for _, l := range r.LeavesWithoutFiles {
			fmt.Fprintf(w, " - VM %q backup %s: %s\n", l.VM, l.Leaf, strings.Join(l.Problems, "; "))
		}
	}
	if len(r.FilesWithoutLeaf) > 0 {
		fmt.Fprintln(w, "Backups on the storage the directory does not know (controld recover imports the complete ones):")
		for _, it := range r.FilesWithoutLeaf {
			line := fmt.Sprintf(" - VM %q backup %s (%s)", it.VM, it.Leaf, it.Dir)
			if it.Broken() {
				line += ", broken: " + strings.Join(it.Problems, "; ")
			}
			fmt.Fprintln(w, line)
		}
	}
	printStrays(w, "Not backups:", r.Strays)
	for _, l := range r.Skipped {
		fmt.Fprintf(w, "not checked: VM %q backup %s: %s\n", l.VM, l.Leaf, strings.Join(l.Problems, "; "))
	}
	if r.Clean() {
		fmt.Fprintln(w, "The directory and the backup storage agree.")
	}
}

func anyBlocked(plan *Plan, kind BlockerKind) bool {
	for _, v := range plan.VMs {
		if len(v.New()) > 0 && v.Blocked(kind) {
			return true
		}
	}
	return false
}

// printRoots lists the scanned roots, where each came from and why it was
// not read.
func printRoots(w io.Writer, heading string, roots []ScannedRoot) {
	fmt.Fprintln(w, heading)
	for _, r := range roots {
		source := "configured in " + r.Source
		if r.Source == SourceCommandLine {
			source = r.Source
		}
		line := fmt.Sprintf(" - %s (%s)", r.Path, source)
		if r.Error != "" {
			line += ": not scanned: " + r.Error
		}
		fmt.Fprintln(w, line)
	}
}

func printStrays(w io.Writer, heading string, strays []Stray) {
	var lines []string
	for _, st := range strays {
		lines = append(lines, fmt.Sprintf(" - %s: %s", st.Path, st.Reason))
	}
	printList(w, heading, lines)
}

// printList prints heading and lines, or nothing when there are no lines;
// it reports whether it printed.
func printList(w io.Writer, heading string, lines []string) bool {
	if len(lines) == 0 {
		return false
	}
	fmt.Fprintln(w, heading)
	fmt.Fprintln(w, strings.Join(lines, "\n"))
	return true
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func nonNil(r []ImportResult) []ImportResult {
	if r == nil {
		return []ImportResult{}
	}
	return r
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
