package crashtest

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// opResult is one operation point's outcome.
type opResult struct {
	p        opPoint
	hit      string // the operation the fault landed on
	outcome  []string
	checked  []string
	problems []string
	details  []string
	ops      []opRec // what the flow passed through the armed seam
	recovery []opRec // what the first fault set off (opPoint.then)
	thenHit  string  // the operation a chained point's second fault landed on
	took     time.Duration
	flowTook time.Duration // setup and flow, without the checks
	missed   bool          // the flow ended before the fault's operation
}

func (r *opResult) problem(format string, a ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, a...))
}

func (r opResult) held() bool { return len(r.problems) == 0 }

func (r opResult) line() string {
	status := "ok"
	if !r.held() {
		status = "FAIL"
	}
	parts := append([]string(nil), r.outcome...)
	if r.held() {
		parts = append(parts, r.checked...)
	} else {
		parts = append(parts, r.problems...)
	}
	parts = append(parts, fmt.Sprintf("%.1fs, checks %.1fs", r.took.Seconds(), (r.took-r.flowTook).Seconds()))
	name := r.hit
	if name == "" {
		name = r.p.traced.name
	}
	then := ""
	if r.p.chained() {
		second := r.thenHit
		if second == "" {
			second = r.p.thenTraced.name
		}
		then = fmt.Sprintf(" %s '%s'", r.p.thenKind(), second)
	}
	return fmt.Sprintf("op point %s #%d %s '%s'%s: %s (%s)", r.p.flow, r.p.fault.N, r.p.kind(), name, then, status, strings.Join(parts, "; "))
}

// landed is the name of the operation a fault (which: "" for the first,
// "second " for a chained point's) landed on, against the one its trace
// had there; a fault that never came makes the result missed.
func (r *opResult) landed(hit *opRec, traced opRec, which string, passed int) string {
	if hit == nil {
		r.missed = true
		r.problem("the %sfault was never reached: %d operations passed this time (traced %d)", which, passed, traced.n)
		return ""
	}
	if hit.name != traced.name && traced.name != "" {
		r.outcome = append(r.outcome, which+"traced there: '"+traced.name+"'")
	}
	return hit.name
}

// TestOpPoints is the operation-level crash harness: for every flow it
// first runs the flow without a fault, listing the operations its steps
// pass through the seam, then once per point with the seam armed: the node
// crashes just before or just after the Nth operation (and a new node life
// takes the leaf up), or the Nth operation fails, or, after a call to
// libvirtd, libvirtd dies and is restarted. Then chained points put a
// second fault into what a first one set off (chainPoints). After each
// point the invariants of docs/crashes.md are checked. CRASHTEST_POINTS
// selects the points (see op_points_test.go).
func TestOpPoints(t *testing.T) {
	var names []string
	for _, f := range opFlows {
		names = append(names, f.name)
	}
	sel, err := selectionFromEnv(names)
	if err != nil {
		t.Fatal(err)
	}
	runStart := time.Now()
	w, teardown := startWorld(t, false)
	defer teardown()
	logPath := filepath.Join(w.root, "logs", "node-in-process.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	logger := logrus.New()
	logger.SetOutput(logFile)
	logger.SetLevel(logrus.InfoLevel)
	for _, h := range w.header {
		fmt.Println("crashtest: " + h)
	}
	fmt.Printf("crashtest: operation points: %s; node log %s\n", sel, logPath)

	var crashN, crashHeld, ioN, ioHeld, lvN, lvHeld, chN, chHeld int
	var timings []string
	for i := range opFlows {
		flow := &opFlows[i]
		if !sel.runs(flow.name) {
			continue
		}
		flowStart := time.Now()
		fam := &opFamily{flow: flow, next: 0x11}
		trace := w.runOpPoint(fam, opPoint{flow: flow.name}, logger, logPath)
		ops := trace.ops
		fmt.Printf("op trace %s: %d operations (%s): %s\n", flow.name, len(ops), stepCounts(ops, flow.steps), trace.line()[strings.Index(trace.line(), ": ")+2:])
		if !trace.held() {
			t.Errorf("the flow %s fails without any fault, its points were not run:\n  %s",
				flow.name, strings.Join(append(trace.problems, trace.details...), "\n  "))
			w.abandon(fam.vm)
			continue
		}
		for _, op := range ops {
			fmt.Printf("op trace %s #%d %s: %s\n", flow.name, op.n, op.step, op.name)
		}
		for _, step := range flow.steps {
			if !slices.ContainsFunc(ops, func(o opRec) bool { return o.step == step }) {
				fmt.Printf("op flow %s: step %s passes no operation through the seam: NOT COVERED\n", flow.name, step)
				t.Errorf("flow %s: step %s passes no operation through the seam, so no point covers it", flow.name, step)
			}
		}
		points := sel.points(flow.name, ops, flow.sampled)
		var fc, fch, fi, fih, fl, flh, fx, fxh int
		run := func(p opPoint) opResult {
			r := w.runOpPoint(fam, p, logger, logPath)
			// In chunks storage a point is anchored to its operation's
			// name and occurrence, and the chunks of a live guest's saved
			// RAM vary (content-defined): an operation of its kind may
			// come once less (a chunk found in the store is touched, not
			// written). Such a point is run again by its number, then
			// anchored once more. So is a chained point's second fault.
			for try := 1; r.missed && (flow.chunked() || p.chained()) && try < 3; try++ {
				fmt.Println(r.line() + ": run again")
				again := p
				again.byNumber = try == 1
				r = w.runOpPoint(fam, again, logger, logPath)
			}
			fmt.Println(r.line())
			if !r.held() {
				t.Errorf("%s\n  replay: %s=%q\n  %s", r.line(), envPoints, p.key(), strings.Join(append(r.problems, r.details...), "\n  "))
			}
			count := func(n, held *int) {
				*n++
				if r.held() {
					*held++
				}
			}
			switch {
			case p.chained():
				count(&fx, &fxh)
			case p.libvirtd:
				count(&fl, &flh)
			case isCrash(p.fault):
				count(&fc, &fch)
			default:
				count(&fi, &fih)
			}
			return r
		}
		var firsts []opResult
		for _, p := range points {
			r := run(p)
			firsts = append(firsts, r)
			if sel.keys != nil && !p.chained() {
				// A replayed point lists what it set off: where a second
				// fault can go (<key>+<M>:<fault>).
				for _, o := range r.recovery {
					fmt.Printf("op recovery %s +%d %s: %s\n", p.key(), o.n, o.step, o.name)
				}
			}
		}
		var chains []opPoint
		if sel.keys == nil {
			chains = chainPoints(ops, firsts, sel.all || sel.chains)
			again, err := regressionPoints(flow.name, ops)
			if err != nil {
				t.Fatal(err)
			}
			chains = append(chains, again...)
		}
		for _, p := range chains {
			run(p)
		}
		crashN, crashHeld, ioN, ioHeld = crashN+fc, crashHeld+fch, ioN+fi, ioHeld+fih
		lvN, lvHeld, chN, chHeld = lvN+fl, lvHeld+flh, chN+fx, chHeld+fxh
		took := time.Since(flowStart)
		timing := fmt.Sprintf("op flow %s: %d operations, %d points (crash %d held of %d, io-error %d held of %d, libvirtd %d held of %d, chained %d held of %d) in %s, %.1fs a point",
			flow.name, len(ops), len(points)+len(chains), fch, fc, fih, fi, flh, fl, fxh, fx, took.Round(time.Second), took.Seconds()/float64(max(len(points)+len(chains)+1, 1)))
		fmt.Println(timing)
		timings = append(timings, timing)
		w.abandon(fam.vm)
	}

	found := w.leftovers(nil)
	if len(found) > 0 {
		fmt.Println("crashtest: final scan of the retain, RAM disk, image and backup directories: FAIL (" + strings.Join(found, "; ") + ")")
		t.Errorf("left behind after the run: %s", strings.Join(found, "; "))
	} else {
		fmt.Println("crashtest: final scan of the retain, RAM disk, image and backup directories: ok (nothing left behind)")
	}
	for _, s := range timings {
		fmt.Println("crashtest: " + s)
	}
	fmt.Printf("crash points: %d held of %d\n", crashHeld, crashN)
	fmt.Printf("io-error points: %d held of %d\n", ioHeld, ioN)
	fmt.Printf("libvirtd points: %d held of %d\n", lvHeld, lvN)
	fmt.Printf("chained points: %d held of %d\n", chHeld, chN)
	fmt.Printf("crashtest: operation points took %s\n", time.Since(runStart).Round(100*time.Millisecond))
	if crashN+ioN+lvN+chN == 0 && sel.keys == nil {
		t.Errorf("no operation point ran")
	}
}

// runOpPoint runs a family's flow once with one fault (none for the
// tracing run), checks the invariants and brings the family back to the
// flow's start.
func (w *world) runOpPoint(fam *opFamily, p opPoint, logger *logrus.Logger, logPath string) (res opResult) {
	res.p = p
	start := time.Now()
	defer func() { res.took = time.Since(start) }()
	logOff := logSize(logPath)
	log := logger.WithField("crashtest", p.key())
	if p.fault.Kind == hostio.NoFault {
		log = logger.WithField("crashtest", p.flow+" (trace)")
	}
	if err := fam.ready(w, log); err != nil {
		res.problem("setup: %v", err)
		return res
	}
	v := fam.vm
	flow := fam.flow

	// What the guest reads before the flow and what it must read after.
	if flow.writesFirst() {
		for _, d := range v.disks {
			pat := fam.nextPattern()
			if err := testenv.WriteGuestPattern(w.lv.URI, w.lv.LogDir, v.name, d.Target, pat, testenv.PatternOffset, testenv.PatternLength); err != nil {
				res.problem("setup: guest write: %v", err)
				fam.broken = true
				return res
			}
			v.reads[d.Target] = pat
		}
	}
	before := maps.Clone(v.reads)
	after := before
	if flow.restore {
		after = fam.goodReads
	}
	boots := testenv.SerialBoots(v.spec)
	good := fam.good
	goodListing := listing(w.backupDir(v, good))
	log.Info("==== crashtest: point starts")

	r := w.newRun(fam, flow, p, log)
	final, finished := r.run()
	res.flowTook = time.Since(start)
	res.ops, res.recovery = r.ops, r.recovery
	res.problems = append(res.problems, r.problems...)
	doubt := !finished || r.hung

	// Where the fault landed.
	if p.fault.Kind != hostio.NoFault {
		res.hit = res.landed(r.hit, p.traced, "", len(r.ops))
		switch {
		case p.libvirtd && r.hit != nil:
			if r.killedLibvirtd == "" {
				res.problem("the seam reached %s but libvirtd was not killed", p.key())
			} else {
				res.outcome = append(res.outcome, "libvirtd killed and restarted in "+r.hit.step+", the node went on")
			}
		case isCrash(p.fault) && r.hit != nil:
			if r.crashedAt == "" {
				res.problem("the seam reached %s but the node did not end", p.fault)
			} else {
				res.outcome = append(res.outcome, fmt.Sprintf("node restarted in %s, the new node did %d operations", r.hit.step, len(r.after)))
			}
		}
		if p.chained() && r.hit != nil {
			res.thenHit = res.landed(r.thenHit, p.thenTraced, "second ", len(r.recovery))
			if r.thenHit != nil {
				res.outcome = append(res.outcome, fmt.Sprintf("then %s in %s", kindName(p.then), r.thenHit.step))
			}
		}
	}

	// The leaf's end and what the node answered.
	if finished {
		outcome, problem := leafEnd(final)
		if problem != "" {
			res.problem("%s", problem)
		} else {
			res.outcome = append(res.outcome, outcome)
		}
	}
	var restored *answer
	for i, a := range r.answers {
		if a.rv != 0 && p.fault.Kind == hostio.FailWith {
			res.outcome = append(res.outcome, fmt.Sprintf("%s answered %d (%s)", a.mode.Request(), a.rv, ldapschema.ReturnCode(a.rv)))
		}
		if a.mode == fsm.Restored {
			restored = &r.answers[i]
		}
	}

	// The VM: power state, disks, chain.
	if found := append(w.vmProblems(v), diskProblems(v)...); len(found) > 0 {
		res.problems = append(res.problems, found...)
		doubt = true
	} else {
		state := "running"
		if !v.running {
			state = "shut off"
		}
		res.checked = append(res.checked, "VM "+state+" on its own images, no backing file")
	}

	// The guest's data: before or after, never zeros or a mix.
	if !r.hung {
		got, notes := w.reads(v, before, after)
		tookEffect := flow.restore && restored != nil && restored.rv == 0
		switch {
		case len(notes) > 0:
			res.problems = append(res.problems, notes...)
			doubt = true
		case !flow.restore:
			res.checked = append(res.checked, "guest reads "+readsOf(v, got))
		case maps.Equal(got, after):
			if !tookEffect {
				res.problem("the guest runs restored (reads %s) but the restore answered %s", readsOf(v, got), answerText(restored))
			} else {
				res.checked = append(res.checked, "guest reads "+readsOf(v, got)+" as restored")
			}
			maps.Copy(v.reads, after)
		case maps.Equal(got, before):
			if tookEffect {
				res.problem("the restore answered 0 but the guest still reads %s as before it", readsOf(v, got))
				doubt = true
			} else {
				res.checked = append(res.checked, "guest reads "+readsOf(v, got)+" as before the restore")
			}
		default:
			res.problem("the guest reads a mix of before and after: %s (before %s, after %s)", readsOf(v, got), readsOf(v, before), readsOf(v, after))
			doubt = true
		}
	}
	if v.running {
		if n := testenv.SerialBoots(v.spec); n != boots {
			res.problem("the guest booted again (%d boots, was %d): its RAM state was lost", n, boots)
			doubt = true
		}
	}

	// The newest good backup: intact, restorable, kept.
	newest := good
	if !flow.restore && finished && final.ReturnValue == 0 {
		newest = final.Name
		if found := w.storedProblems(flow, v, final.Name, before); len(found) > 0 {
			res.problems = append(res.problems, found...)
		}
		if flow.chunked() {
			res.outcome = append(res.outcome, retainReads(final)...)
			// Without a fault the retain reads what the dirty bitmap of
			// the good backup's leaf marks and takes the rest from its index.
			if p.fault.Kind == hostio.NoFault && !readByBitmap(final, v, good) {
				res.problem("the retain did not read by the bitmap %s: %s", format.BitmapName(good), strings.Join(retainReads(final), ", "))
			}
		}
	}
	if now := listing(w.backupDir(v, good)); now != goodListing {
		res.problem("the backup %s changed:\nbefore:\n%safter:\n%s", good, goodListing, now)
		doubt = true
	}
	found := w.goodBackupProblems(v, newest)
	if flow.chunked() {
		found = append(found, w.chunkBackupProblems(v, good, fam.goodReads)...)
	}
	if len(found) > 0 {
		res.problems = append(res.problems, found...)
	} else {
		res.checked = append(res.checked, "newest good backup "+newest+" intact, restorable, kept")
	}

	// Nothing left once the leaf is settled.
	if finished {
		left := w.leftovers(v)
		if len(left) > 0 {
			doubt = true
		}
		left = append(left, w.intentLeft(v, r.name)...)
		if len(left) > 0 {
			res.problems = append(res.problems, left...)
		} else {
			res.checked = append(res.checked, "nothing left")
		}
	}

	if flow.chunked() {
		res.problems = append(res.problems, r.chunkProblems()...)
	}
	w.resetFamily(fam, r, doubt, promote(flow, final, finished, res))
	if flow.chunked() {
		res.problems = append(res.problems, w.chunkReset(fam, log)...)
	}

	if !res.held() {
		res.details = append(res.details, "leaf "+r.dn+": "+r.history())
		if r.crashedAt != "" {
			res.details = append(res.details, "crashed at "+r.crashedAt)
		}
		if len(r.after) > 0 {
			var names []string
			for _, o := range r.after {
				names = append(names, fmt.Sprintf("%s: %s", o.step, o.name))
			}
			res.details = append(res.details, "the node after the crash did: "+strings.Join(names, " | "))
		}
		lines := logLines(logPath, logOff, 15, "level=error", "level=warning")
		res.details = append(res.details, fmt.Sprintf("node log (%s), errors and warnings of this point:\n    %s", logPath, strings.Join(lines, "\n    ")))
	}
	return res
}

// resetFamily brings the family back to the flow's start: a backup point's
// leaf and files go (or, promoted, it becomes the family's good backup and
// the previous one goes), a restored leaf is made restorable again; a
// family in doubt is rebuilt before the next point.
func (w *world) resetFamily(fam *opFamily, r *flowRun, doubt, promoted bool) {
	if doubt {
		fam.broken = true
		return
	}
	v := fam.vm
	switch {
	case r.dn == "":
		return
	case r.name != fam.good && promoted:
		w.dropBackup(v, fam.good)
		fam.good, fam.goodReads = r.name, maps.Clone(v.reads)
		return
	case r.name != fam.good:
		w.dropBackup(v, r.name)
		return
	}
	e, err := w.store.Get(r.dn, "*")
	if err != nil {
		fam.broken = true
		return
	}
	l, err := ldapschema.ParseLeaf(w.store.Tree, e)
	if err != nil || l.Mode != string(fsm.Finished) || l.ReturnValue != 0 {
		err = w.store.Update(r.dn, "", map[string][]string{
			ldapschema.AttrMode: {string(fsm.Finished)}, ldapschema.AttrReturnValue: {"0"},
		})
		if err != nil {
			fam.broken = true
		}
	}
	_ = os.RemoveAll(filepath.Join(w.nodeStateDir(), "intent", v.name, r.name))
}

// dropBackup removes a backup's leaf, files and intent records.
func (w *world) dropBackup(v *testVM, leaf string) {
	_ = w.store.Delete(w.store.Tree.Leaf(v.name, leaf))
	_ = os.RemoveAll(w.backupDir(v, leaf))
	_ = os.RemoveAll(filepath.Join(w.nodeStateDir(), "intent", v.name, leaf))
}

// nextPattern is a pattern no disk of the backup holds and not zero.
func (f *opFamily) nextPattern() byte {
	for {
		p := f.next
		f.next++
		if p == 0 || slices.Contains(slices.Collect(maps.Values(f.goodReads)), p) {
			continue
		}
		return p
	}
}

func readsOf(v *testVM, m map[string]byte) string {
	var parts []string
	for _, d := range v.disks {
		parts = append(parts, fmt.Sprintf("%s 0x%02x", d.Target, m[d.Target]))
	}
	return strings.Join(parts, ", ")
}

func answerText(a *answer) string {
	if a == nil {
		return "nothing (the restore step never answered)"
	}
	return fmt.Sprintf("%d (%s)", a.rv, ldapschema.ReturnCode(a.rv))
}
