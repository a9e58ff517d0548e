package recovery

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Options are one run of `controld recover`, as its flags set them.
type Options struct {
	// Paths are backup roots the operator names, scanned after the
	// configured ones.
	Paths []string
	// Check compares the other way: leaves against their files.
	Check bool
	// DryRun validates and lists; Yes imports what is ready. Either one
	// asks no questions.
	DryRun, Yes bool
	// RecreateVMs re-creates every missing VM entry from its saved LDIF
	// without asking.
	RecreateVMs bool
	// JSON writes one document instead of text (never with questions).
	JSON bool

	In     io.Reader        // the answers
	Out    io.Writer        // the dialogue and the report
	Images ImageChecker     // nil: qemu-img
	Now    func() time.Time // nil: time.Now
}

// ErrNoRoot: neither the directory nor the operator names a backup root.
var ErrNoRoot = errors.New("no backup root: the directory configures none; name the backup storage's root as PATH")

// DirectoryError is a failure to read or write the directory, as opposed to
// something recovery found.
type DirectoryError struct{ Err error }

func (e DirectoryError) Error() string { return e.Err.Error() }
func (e DirectoryError) Unwrap() error { return e.Err }

// Run is `controld recover`: it scans the configured roots and o.Paths once,
// then either checks the directory against the files (o.Check) or validates
// and imports, unattended or asking on o.In. Its error says why the command
// fails: ErrNoRoot, a DirectoryError, or what was found or left undone.
func Run(ctx context.Context, store *ldapschema.Store, o Options) error {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Images == nil {
		o.Images = QemuImgChecker{}
	}
	roots, errs := BackupRoots(store)
	if len(errs) > 0 && len(roots) == 0 && errors.Is(errs[0], ldapschema.ErrUnavailable) {
		return DirectoryError{errs[0]}
	}
	for _, p := range o.Paths {
		roots = append(roots, RootSource{Path: p, Source: SourceCommandLine})
	}
	if len(roots) == 0 {
		return ErrNoRoot
	}
	text := !o.JSON
	if text {
		for _, e := range errs {
			fmt.Fprintf(o.Out, "warning: a backup configuration is unreadable: %v\n", e)
		}
	}
	// An interrupt stops the scan (and qemu-img) cleanly.
	sctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	scan := Scan(sctx, roots, ScanOptions{Images: o.Images, Progress: func(dir string) {
		if text {
			fmt.Fprintf(o.Out, "Scanning %s\n", dir)
		}
	}})
	err := sctx.Err()
	stop()
	if err != nil {
		return fmt.Errorf("scan interrupted: %w", err)
	}

	if o.Check {
		return check(ctx, store, scan, o)
	}
	s := &session{store: store, scan: scan, o: o, answers: map[string]bool{}, in: bufio.NewReader(o.In)}
	if o.Yes || o.DryRun {
		return s.unattended()
	}
	return s.interactive()
}

// check reports Check; anything found is the error, for cron and monitoring.
func check(ctx context.Context, store *ldapschema.Store, scan *ScanReport, o Options) error {
	r, err := Check(ctx, store, scan, o.Images)
	if err != nil {
		return DirectoryError{err}
	}
	if o.JSON {
		if err := writeJSON(o.Out, r); err != nil {
			return err
		}
	} else {
		printCheck(o.Out, r)
	}
	if !r.Clean() {
		return fmt.Errorf("%d leaves without their files, %d iterations and %d other entries on the storage no leaf knows",
			len(r.LeavesWithoutFiles), len(r.FilesWithoutLeaf), len(r.Strays))
	}
	return nil
}

// importHoldingSignals imports with SIGINT and SIGTERM held off: a VM's
// import takes milliseconds, and cut in the middle it would stay half
// created. At the prompts before, an interrupt simply ends the command;
// nothing is written until the import.
func importHoldingSignals(store *ldapschema.Store, plan *Plan, now time.Time) ([]ImportResult, error) {
	_, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return Import(store, plan, now)
}

// session is the dialogue of one run: the scan is done once,
// the validation repeated after each fix.
type session struct {
	store   *ldapschema.Store
	scan    *ScanReport
	o       Options
	answers map[string]bool // VM -> may its entry be re-created
	in      *bufio.Reader
}

func (s *session) validate() (*Plan, error) {
	plan, err := Validate(s.store, s.scan, ValidateOptions{
		Recreate: func(vm string) bool { return s.o.RecreateVMs || s.answers[vm] },
	})
	if err != nil {
		return nil, DirectoryError{err}
	}
	return plan, nil
}

func (s *session) unattended() error {
	plan, err := s.validate()
	if err != nil {
		return err
	}
	var results []ImportResult
	if s.o.Yes {
		if results, err = importHoldingSignals(s.store, plan, s.o.Now()); err != nil {
			return DirectoryError{err}
		}
	}
	if s.o.JSON {
		if err := writeJSON(s.o.Out, struct {
			*Plan
			DryRun   bool           `json:"dryRun"`
			Imported []ImportResult `json:"imported"`
		}{plan, s.o.DryRun, nonNil(results)}); err != nil {
			return err
		}
	} else {
		out := s.o.Out
		printFound(out, plan)
		printUnknown(out, plan, nil)
		printNotes(out, plan, nil)
		if printMissing(out, plan, nil) && !s.o.RecreateVMs && anyBlocked(plan, BlockVMMissing) {
			fmt.Fprintln(out, "(--recreate-vms re-creates missing VM entries from their saved LDIF)")
		}
		if s.o.DryRun {
			fmt.Fprintln(out, "Dry run: nothing was changed.")
			return nil
		}
		printResults(out, results)
	}
	if s.o.DryRun {
		return nil
	}
	return outcome(plan, results, nil)
}

// outcome is the command's error: a failed import, or backups left
// behind because something stood in their way.
func outcome(plan *Plan, results []ImportResult, declined map[string]bool) error {
	failed := 0
	for _, r := range results {
		if r.Error != "" {
			failed++
		}
	}
	blocked := 0
	for _, v := range plan.VMs {
		if leftByChoice(v, declined) && len(v.Blockers) == 1 {
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

func (s *session) interactive() error {
	out := s.o.Out
	first := true
	for {
		plan, err := s.validate()
		if err != nil {
			return err
		}
		if first {
			printFound(out, plan)
			first = false
		}
		// Ask about VMs without an entry, once each; a yes changes the plan.
		asked := false
		for _, v := range plan.VMs {
			if _, done := s.answers[v.VM]; done || !v.Blocked(BlockVMMissing) || v.LDIFLeaf == "" {
				continue
			}
			fmt.Fprintf(out, "VM %q has no entry in the directory.\n", v.VM)
			ok, err := s.ask(fmt.Sprintf("Re-create it (node %q, pool %q, disks %s) from the LDIF saved with %s? (yes/no) [default=yes]: ",
				v.Node, v.VMPool, orNone(v.Disks), v.LDIFLeaf), true)
			if err != nil {
				return err
			}
			s.answers[v.VM] = ok
			asked = asked || ok
		}
		if asked {
			continue
		}
		printUnknown(out, plan, s.answers)
		printNotes(out, plan, s.answers)
		if printMissing(out, plan, s.answers) {
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
			return outcome(plan, nil, s.answers)
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
		results, err := importHoldingSignals(s.store, plan, s.o.Now())
		if err != nil {
			return DirectoryError{err}
		}
		printResults(out, results)
		return outcome(plan, results, s.answers)
	}
}

// line reads one answer; the session has one reader, so answers typed ahead
// (or piped) are not lost between questions.
func (s *session) line(prompt string) (string, error) {
	fmt.Fprint(s.o.Out, prompt)
	l, err := s.in.ReadString('\n')
	if err != nil && l == "" {
		fmt.Fprintln(s.o.Out)
		return "", fmt.Errorf("no answer on standard input: %w (use --yes or --dry-run in scripts)", err)
	}
	return l, nil
}

func (s *session) ask(prompt string, def bool) (bool, error) {
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
		fmt.Fprintln(s.o.Out, "Please answer yes or no.")
	}
}
