package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

func init() {
	register(command{name: "recover", summary: "rebuild the backup catalog from the backup storage (run where it is mounted)", raw: runRecover})
}

const recoverUsage = `usage: controld recover [flags] [PATH...]

Finds every backup on the backup storage and re-creates the directory
entries that are missing, so those backups can be listed and restored again:
after the directory was lost, or restored from an old dump.

Run it where the backup storage is mounted (a backup host or a node):
controld itself never reads backup files. It scans the backup roots of the
directory's backup configurations (global, pool and VM level) and every
PATH given (a backup root, holding vm-persistent/ and vm-templates/).

Nothing changes before you agree: recover lists what it found, what the
directory knows already and what stands in the way, lets you fix that and
validate again, then asks before it imports. Each VM is imported all or
nothing. Broken backups are reported and skipped.

  controld recover                      interactive, answers read from stdin
  controld recover --dry-run [--json]   validate only
  controld recover --yes [--recreate-vms] [--json]
                                        import without asking (scripts)
  controld recover --check [--json]     leaves whose files are gone or
                                        incomplete, and files no leaf knows;
                                        exit status 1 when anything is found

flags:`

func runRecover(args []string) error {
	return recoverCommand(context.Background(), args, recoverIO{in: os.Stdin, out: os.Stdout})
}

// recoverImport imports with SIGINT and SIGTERM held off: a VM's import
// takes milliseconds, and cut in the middle it would stay half created. At
// the prompts before, an interrupt simply ends the command; nothing is
// written until the import.
func recoverImport(store *ldapschema.Store, plan *control.RecoverPlan, now time.Time) ([]control.ImportResult, error) {
	_, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return control.ImportRecovered(store, plan, now)
}

// recoverIO is what the command talks to, so tests can drive it in-process.
type recoverIO struct {
	in     io.Reader
	out    io.Writer
	images control.ImageChecker // nil: qemu-img
	now    func() time.Time     // nil: time.Now
}

type recoverFlags struct {
	common
	dryRun, yes, json, check, recreateVMs bool
	paths                                 []string
}

func parseRecoverFlags(args []string, out io.Writer) (recoverFlags, error) {
	var f recoverFlags
	fs := flag.NewFlagSet("recover", flag.ContinueOnError)
	f.common.register(fs)
	fs.BoolVar(&f.dryRun, "dry-run", false, "validate and list, change nothing")
	fs.BoolVar(&f.yes, "yes", false, "import without asking (for scripts); VMs with missing dependencies are skipped")
	fs.BoolVar(&f.json, "json", false, "write one JSON document instead of text (with --dry-run, --yes or --check)")
	fs.BoolVar(&f.check, "check", false, "compare the other way: leaves whose files are gone or incomplete, files no leaf knows")
	fs.BoolVar(&f.recreateVMs, "recreate-vms", false, "re-create missing VM entries (and their disks) from the LDIF saved with their newest backup")
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), recoverUsage)
		fs.PrintDefaults()
	}
	// Flags may follow paths: parse again after each one.
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return f, usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		p, err := filepath.Abs(fs.Arg(0))
		if err != nil {
			return f, usagef("%s: %v", fs.Arg(0), err)
		}
		f.paths = append(f.paths, p)
		rest = fs.Args()[1:]
	}
	switch {
	case f.check && (f.yes || f.dryRun || f.recreateVMs):
		return f, usagef("--check changes nothing; it does not go with --yes, --dry-run or --recreate-vms")
	case f.yes && f.dryRun:
		return f, usagef("--yes and --dry-run contradict each other")
	case f.json && !f.yes && !f.dryRun && !f.check:
		return f, usagef("--json does not ask questions: add --dry-run, --yes or --check")
	}
	return f, nil
}

func recoverCommand(ctx context.Context, args []string, rio recoverIO) error {
	f, err := parseRecoverFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	if rio.now == nil {
		rio.now = time.Now
	}
	if rio.images == nil {
		rio.images = control.QemuImgChecker{}
	}
	_, store, err := f.open()
	if err != nil {
		return err
	}
	defer store.Close()

	roots, errs := control.BackupRoots(store)
	if len(errs) > 0 && len(roots) == 0 && errors.Is(errs[0], ldapschema.ErrUnavailable) {
		return backendError{errs[0]}
	}
	for _, p := range f.paths {
		roots = append(roots, control.RootSource{Path: p, Source: "command line"})
	}
	if len(roots) == 0 {
		return usagef("no backup root: the directory configures none; name the backup storage's root as PATH")
	}
	text := !f.json
	if text {
		for _, e := range errs {
			fmt.Fprintf(rio.out, "warning: a backup configuration is unreadable: %v\n", e)
		}
	}
	// An interrupt stops the scan (and qemu-img) cleanly.
	sctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	scan := control.ScanBackups(sctx, roots, control.ScanOptions{Images: rio.images, Progress: func(dir string) {
		if text {
			fmt.Fprintf(rio.out, "Scanning %s\n", dir)
		}
	}})
	err = sctx.Err()
	stop()
	if err != nil {
		return fmt.Errorf("scan interrupted: %w", err)
	}

	if f.check {
		r, err := control.CheckBackups(ctx, store, scan, rio.images)
		if err != nil {
			return backendError{err}
		}
		if f.json {
			if err := recoverJSON(rio.out, r); err != nil {
				return err
			}
		} else {
			recoverPrintCheck(rio.out, r)
		}
		if !r.Clean() {
			return fmt.Errorf("%d leaves without their files, %d iterations and %d other entries on the storage no leaf knows",
				len(r.LeavesWithoutFiles), len(r.FilesWithoutLeaf), len(r.Strays))
		}
		return nil
	}

	s := &recoverSession{store: store, scan: scan, f: f, rio: rio, answers: map[string]bool{}, in: bufio.NewReader(rio.in)}
	if f.yes || f.dryRun {
		return s.unattended()
	}
	return s.interactive()
}

// recoverSession is one run of `controld recover`: the scan is done once,
// the validation repeated after each fix.
type recoverSession struct {
	store   *ldapschema.Store
	scan    *control.ScanReport
	f       recoverFlags
	rio     recoverIO
	answers map[string]bool // VM -> may its entry be re-created
	in      *bufio.Reader
}

func (s *recoverSession) validate() (*control.RecoverPlan, error) {
	plan, err := control.ValidateRecovery(s.store, s.scan, control.ValidateOptions{
		Recreate: func(vm string) bool { return s.f.recreateVMs || s.answers[vm] },
	})
	if err != nil {
		return nil, backendError{err}
	}
	return plan, nil
}

func (s *recoverSession) unattended() error {
	plan, err := s.validate()
	if err != nil {
		return err
	}
	var results []control.ImportResult
	if s.f.yes {
		if results, err = recoverImport(s.store, plan, s.rio.now()); err != nil {
			return backendError{err}
		}
	}
	if s.f.json {
		if err := recoverJSON(s.rio.out, struct {
			*control.RecoverPlan
			DryRun   bool                   `json:"dryRun"`
			Imported []control.ImportResult `json:"imported"`
		}{plan, s.f.dryRun, recoverNonNil(results)}); err != nil {
			return err
		}
	} else {
		out := s.rio.out
		recoverPrintFound(out, plan)
		recoverPrintUnknown(out, plan, nil)
		recoverPrintNotes(out, plan, nil)
		if recoverPrintMissing(out, plan, nil) && !s.f.recreateVMs && recoverAnyBlocked(plan, control.BlockVMMissing) {
			fmt.Fprintln(out, "(--recreate-vms re-creates missing VM entries from their saved LDIF)")
		}
		if s.f.dryRun {
			fmt.Fprintln(out, "Dry run: nothing was changed.")
			return nil
		}
		recoverPrintResults(out, results)
	}
	if s.f.dryRun {
		return nil
	}
	return recoverOutcome(plan, results, nil)
}

// recoverOutcome is the command's error: a failed import, or backups left
// behind because something stood in their way.
func recoverOutcome(plan *control.RecoverPlan, results []control.ImportResult, declined map[string]bool) error {
	failed := 0
	for _, r := range results {
		if r.Error != "" {
			failed++
		}
	}
	blocked := 0
	for _, v := range plan.VMs {
		if recoverDeclined(v, declined) && len(v.Blockers) == 1 {
			continue // the operator chose to leave it
		}
		if len(v.New()) > 0 && len(v.Blockers) > 0 {
			blocked++
		}
	}
	if len(plan.Blockers) > 0 {
		return fmt.Errorf("nothing recovered: %s", plan.Blockers[0].Message)
	}
	if failed+blocked > 0 {
		return fmt.Errorf("%d VM(s) failed to import and %d VM(s) were skipped for missing dependencies", failed, blocked)
	}
	return nil
}

func (s *recoverSession) interactive() error {
	out := s.rio.out
	first := true
	for {
		plan, err := s.validate()
		if err != nil {
			return err
		}
		if first {
			recoverPrintFound(out, plan)
			first = false
		}
		// Ask about VMs without an entry, once each; a yes changes the plan.
		asked := false
		for _, v := range plan.VMs {
			if _, done := s.answers[v.VM]; done || !v.Blocked(control.BlockVMMissing) || v.LDIFLeaf == "" {
				continue
			}
			fmt.Fprintf(out, "VM %q has no entry in the directory.\n", v.VM)
			ok, err := s.ask(fmt.Sprintf("Re-create it (node %q, pool %q, disks %s) from the LDIF saved with %s? (yes/no) [default=yes]: ",
				v.Node, v.VMPool, recoverOrNone(v.Disks), v.LDIFLeaf), true)
			if err != nil {
				return err
			}
			s.answers[v.VM] = ok
			asked = asked || ok
		}
		if asked {
			continue
		}
		recoverPrintUnknown(out, plan, s.answers)
		recoverPrintNotes(out, plan, s.answers)
		if recoverPrintMissing(out, plan, s.answers) {
			line, err := s.line(`Please fix those and then hit ENTER to validate again ("skip" recovers the others without them, "quit" stops): `)
			if err != nil {
				return err
			}
			switch strings.ToLower(strings.TrimSpace(line)) {
			case "skip", "s":
			case "quit", "q":
				return errors.New("stopped; nothing was changed")
			default:
				continue
			}
		}
		if len(plan.Ready()) == 0 {
			fmt.Fprintln(out, "Nothing to recover.")
			return recoverOutcome(plan, nil, s.answers)
		}
		n := 0
		for _, v := range plan.Ready() {
			n += len(v.New())
		}
		fmt.Fprintf(out, "Ready: %d backup(s) of %d VM(s).\n", n, len(plan.Ready()))
		ok, err := s.ask("Would you like those to be recovered? (yes/no) [default=no]: ", false)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("stopped; nothing was changed")
		}
		results, err := recoverImport(s.store, plan, s.rio.now())
		if err != nil {
			return backendError{err}
		}
		recoverPrintResults(out, results)
		return recoverOutcome(plan, results, s.answers)
	}
}

// line reads one answer; the session has one reader, so answers typed ahead
// (or piped) are not lost between questions.
func (s *recoverSession) line(prompt string) (string, error) {
	fmt.Fprint(s.rio.out, prompt)
	l, err := s.in.ReadString('\n')
	if err != nil && l == "" {
		fmt.Fprintln(s.rio.out)
		return "", fmt.Errorf("no answer on standard input: %w (use --yes or --dry-run in scripts)", err)
	}
	return l, nil
}

func (s *recoverSession) ask(prompt string, def bool) (bool, error) {
	for {
		l, err := s.line(prompt)
		if err != nil {
			return false, err
		}
		switch strings.ToLower(strings.TrimSpace(l)) {
		case "":
			return def, nil
		case "y", "yes":
			return true, nil
		case "n", "no":
			return false, nil
		}
		fmt.Fprintln(s.rio.out, "Please answer yes or no.")
	}
}

func recoverPrintFound(w io.Writer, plan *control.RecoverPlan) {
	fmt.Fprintln(w, "The recovery scanned these backup roots:")
	for _, r := range plan.Roots {
		line := fmt.Sprintf(" - %s (%s)", r.Path, recoverRootSource(r.Source))
		if r.Error != "" {
			line += ": not scanned: " + r.Error
		}
		fmt.Fprintln(w, line)
	}
	if b := plan.Broken(); len(b) > 0 {
		fmt.Fprintln(w, "Broken backups, skipped:")
		for _, it := range b {
			fmt.Fprintf(w, " - VM %q backup %s (%s): %s\n", it.VM, it.Leaf, it.Dir, strings.Join(it.Problems, "; "))
		}
	}
	if len(plan.Strays) > 0 {
		fmt.Fprintln(w, "Not backups, skipped:")
		for _, st := range plan.Strays {
			fmt.Fprintf(w, " - %s: %s\n", st.Path, st.Reason)
		}
	}
	var known, different, copies []string
	for _, v := range plan.VMs {
		var names []string
		for _, it := range v.Iterations {
			switch it.Status {
			case control.StatusKnown:
				names = append(names, it.Leaf)
			case control.StatusKnownDifferent:
				different = append(different, fmt.Sprintf(" - VM %q backup %s: the directory has it as %s; left alone", v.VM, it.Leaf, it.Directory))
			case control.StatusDuplicate:
				copies = append(copies, fmt.Sprintf(" - VM %q backup %s (%s): %s", v.VM, it.Leaf, it.Dir, it.Directory))
			}
		}
		if len(names) > 0 {
			known = append(known, fmt.Sprintf(" - VM %q: %s", v.VM, strings.Join(names, ", ")))
		}
	}
	if len(known) > 0 {
		fmt.Fprintln(w, "Already in the directory:")
		fmt.Fprintln(w, strings.Join(known, "\n"))
	}
	if len(different) > 0 {
		fmt.Fprintln(w, "In the directory in another state:")
		fmt.Fprintln(w, strings.Join(different, "\n"))
	}
	if len(copies) > 0 {
		fmt.Fprintln(w, "Copies of backups found in an earlier root, skipped:")
		fmt.Fprintln(w, strings.Join(copies, "\n"))
	}
}

// recoverPrintUnknown lists the new backups per VM and says for each VM what
// the import does, or why it will not.
func recoverPrintUnknown(w io.Writer, plan *control.RecoverPlan, declined map[string]bool) {
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
		case recoverDeclined(v, declined):
			how = append(how, "skipped as you chose: its entry is not re-created")
		case len(v.Blockers) > 0:
			how = append(how, "held back: see what is missing below")
		default:
			if v.Entry == control.EntryRecreate {
				how = append(how, "VM entry and disks re-created from the LDIF saved with "+v.LDIFLeaf)
			}
			switch v.BackupEntry {
			case control.BackupEntryFromLDIF:
				how = append(how, "its backup configuration re-created from the LDIF saved with "+v.LDIFLeaf)
			case control.BackupEntryContainer:
				how = append(how, "configuration "+v.Config)
			}
		}
		if len(how) > 0 {
			line += " (" + strings.Join(how, "; ") + ")"
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		fmt.Fprintln(w, "No unknown backups were found.")
		return
	}
	fmt.Fprintln(w, "The following unknown backups have been found:")
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

// recoverDeclined: the operator answered no to re-creating the VM's entry,
// and nothing else stands in its way.
func recoverDeclined(v *control.VMPlan, declined map[string]bool) bool {
	ok, answered := declined[v.VM]
	return answered && !ok && v.Blocked(control.BlockVMMissing)
}

func recoverPrintNotes(w io.Writer, plan *control.RecoverPlan, declined map[string]bool) {
	var lines []string
	for _, v := range plan.VMs {
		if len(v.New()) == 0 || recoverDeclined(v, declined) {
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
	if len(lines) > 0 {
		fmt.Fprintln(w, "Please note:")
		fmt.Fprintln(w, strings.Join(lines, "\n"))
	}
}

// recoverPrintMissing lists what stands in the way, leaving out VMs the
// operator chose not to re-create; it reports whether anything was listed.
func recoverPrintMissing(w io.Writer, plan *control.RecoverPlan, declined map[string]bool) bool {
	var lines []string
	for _, b := range plan.Blockers {
		lines = append(lines, " - "+b.Message)
	}
	for _, v := range plan.VMs {
		if len(v.New()) == 0 || recoverDeclined(v, declined) {
			continue
		}
		for _, b := range v.Blockers {
			lines = append(lines, " - "+b.Message)
		}
	}
	if len(lines) == 0 {
		return false
	}
	fmt.Fprintln(w, "You are currently missing the following:")
	fmt.Fprintln(w, strings.Join(lines, "\n"))
	return true
}

func recoverPrintResults(w io.Writer, results []control.ImportResult) {
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

func recoverPrintCheck(w io.Writer, r *control.CheckReport) {
	fmt.Fprintln(w, "Scanned backup roots:")
	for _, root := range r.Roots {
		line := fmt.Sprintf(" - %s (%s)", root.Path, recoverRootSource(root.Source))
		if root.Error != "" {
			line += ": not scanned: " + root.Error
		}
		fmt.Fprintln(w, line)
	}
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
	if len(r.Strays) > 0 {
		fmt.Fprintln(w, "Not backups:")
		for _, st := range r.Strays {
			fmt.Fprintf(w, " - %s: %s\n", st.Path, st.Reason)
		}
	}
	for _, l := range r.Skipped {
		fmt.Fprintf(w, "not checked: VM %q backup %s: %s\n", l.VM, l.Leaf, strings.Join(l.Problems, "; "))
	}
	if r.Clean() {
		fmt.Fprintln(w, "The directory and the backup storage agree.")
	}
}

func recoverAnyBlocked(plan *control.RecoverPlan, kind control.BlockerKind) bool {
	for _, v := range plan.VMs {
		if len(v.New()) > 0 && v.Blocked(kind) {
			return true
		}
	}
	return false
}

func recoverRootSource(s string) string {
	if s == "command line" {
		return s
	}
	return "configured in " + s
}

func recoverOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func recoverNonNil(r []control.ImportResult) []control.ImportResult {
	if r == nil {
		return []control.ImportResult{}
	}
	return r
}

func recoverJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
