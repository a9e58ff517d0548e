package crashtest

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/nodebackupd/node"
)

// A flow is one workflow the operation points are injected into, driven
// from the leaf's first write to its end: the control side's writes come
// from fsm.Reconcile (what controld writes) and the operator's from the
// functions behind `controld restore` (what the web UI writes), the node's
// steps from an in-process Agent. No daemon, no watch, no timer: every
// point runs the same sequence.
type opFlow struct {
	name     string
	restore  bool // a restore of the newest backup; else a backup
	shape    vmShape
	patterns []byte
	steps    []string          // the node's steps, in order
	snapshot node.SnapshotMode // how the node saves a running VM's memory; "": the default, live
	storage  format.Storage    // the node's storage setting (docs/chunks.md); "" is full
	// sampled: the steps the sample takes points in (nil: all); the other
	// steps do what they do in another flow, which samples them.
	sampled []string
}

// chunked: the flow's node keeps backups in chunks storage.
func (f *opFlow) chunked() bool { return f.storage == format.StorageChunks }

// writesFirst: the guest writes a new pattern before each point. A restore
// must bring the backed-up data back; a backup in chunks storage then has
// chunks its dirty bitmap marks, read and stored anew, besides those it
// takes from the previous backup's index.
func (f *opFlow) writesFirst() bool { return f.restore || f.steadyRegion() }

// steadyRegion: the guest writes a region once, before the first backup,
// and never again: its chunk is taken from the previous backup's index at
// every point (and touched), while the pattern region's are read anew.
func (f *opFlow) steadyRegion() bool { return f.chunked() && !f.restore && !f.shape.shutOff }

var (
	backupSteps  = []string{string(fsm.Snapshot), string(fsm.Merge), string(fsm.Retain)}
	restoreSteps = []string{string(fsm.UnretainSmallFiles), string(fsm.UnretainLargeFiles), string(fsm.Restore)}
)

// The VMs are small: a 16 MiB guest saves a 16 MiB state, which keeps the
// number of write operations of a copy (one per MiB) low.
var opFlows = []opFlow{
	{name: "backup/running", shape: vmShape{prefix: "or", memMiB: 16, diskMiB: 16}, patterns: []byte{0xb1}, steps: backupSteps},
	{name: "backup/running-save", shape: vmShape{prefix: "ov", memMiB: 16, diskMiB: 16}, patterns: []byte{0xb2}, steps: backupSteps, snapshot: node.SnapshotSave},
	{name: "backup/shut-off", shape: vmShape{prefix: "os", memMiB: 16, diskMiB: 16, shutOff: true}, patterns: []byte{0xc1}, steps: backupSteps},
	{name: "backup/two-disk", shape: vmShape{prefix: "ot", memMiB: 16, diskMiB: 16}, patterns: []byte{0xd1, 0xd2}, steps: backupSteps},
	{name: "restore/running", restore: true, shape: vmShape{prefix: "oz", memMiB: 16, diskMiB: 16}, patterns: []byte{0xab}, steps: restoreSteps},
	// In chunks storage the family's good backup is in chunks too, so a
	// backup's retain reads by the dirty bitmap of that backup's leaf.
	// Only the retain and unretainLargeFiles differ from full storage.
	{name: "backup/running-chunks", shape: vmShape{prefix: "oc", memMiB: 16, diskMiB: 24}, patterns: []byte{0xe1}, steps: backupSteps,
		storage: format.StorageChunks, sampled: []string{string(fsm.Retain)}},
	{name: "backup/shut-off-chunks", shape: vmShape{prefix: "oh", memMiB: 16, diskMiB: 16, shutOff: true}, patterns: []byte{0xe2}, steps: backupSteps,
		storage: format.StorageChunks, sampled: []string{string(fsm.Retain)}},
	{name: "restore/running-chunks", restore: true, shape: vmShape{prefix: "ow", memMiB: 16, diskMiB: 16}, patterns: []byte{0xe3}, steps: restoreSteps,
		storage: format.StorageChunks, sampled: []string{string(fsm.UnretainLargeFiles)}},
}

// Bounds against a hang; no speed assertion.
const (
	stepLimit = 3 * time.Minute // one pass of the node over a leaf
	flowLimit = 8 * time.Minute // a flow from its first write to finished
)

// opFamily is a flow's VM, reused from point to point while it stays
// healthy, with its newest good backup.
type opFamily struct {
	flow      *opFlow
	vm        *testVM
	good      string          // the newest good backup's leaf name
	goodReads map[string]byte // what the guest read when it was taken
	next      byte            // the next pattern a restore point writes first
	broken    bool
}

// ready makes a new VM and its first backup when there is none or the last
// point left it in doubt.
func (f *opFamily) ready(w *world, log logrus.FieldLogger) error {
	if f.vm != nil && !f.broken {
		return nil
	}
	w.abandon(f.vm)
	f.vm, f.good, f.broken = nil, "", false
	v, err := w.makeVM(f.flow.shape, f.flow.patterns...)
	if err != nil {
		f.broken = true
		return fmt.Errorf("new VM: %w", err)
	}
	f.vm = v
	if f.flow.steadyRegion() {
		for _, d := range v.disks {
			if err := testenv.WriteGuestPattern(w.lv.URI, w.lv.LogDir, v.name, d.Target, steadyPattern, steadyOffset, steadyLength); err != nil {
				f.broken = true
				return fmt.Errorf("guest write of the steady region: %w", err)
			}
		}
		v.steady = steadyPattern
	}
	// The first backup, without a fault: the one a backup point must not
	// lose and the one a restore point restores.
	if err := f.newGood(w, log); err != nil {
		f.broken = true
		return fmt.Errorf("first backup of %s: %w", v.name, err)
	}
	if f.flow.chunked() && !f.flow.restore {
		// The first backup read the disks whole and stored the state of a
		// guest just booted; a second one leaves what every later point
		// finds: a good backup read by bitmap, a state of the idle guest
		// stored, so that a point passes the operations its trace did.
		first := f.good
		if err := f.newGood(w, log); err != nil {
			f.broken = true
			return fmt.Errorf("second backup of %s: %w", v.name, err)
		}
		w.dropBackup(v, first)
	}
	return nil
}

// newGood backs the family's VM up without a fault and makes that backup
// the family's newest good one.
func (f *opFamily) newGood(w *world, log logrus.FieldLogger) error {
	v := f.vm
	r := w.newRun(f, backupFlowOf(f.flow), opPoint{}, log)
	final, ok := r.run()
	switch {
	case !ok || len(r.problems) > 0:
		return errors.New(strings.Join(r.problems, "; "))
	case final.ReturnValue != 0:
		return fmt.Errorf("ended rv=%d (%s)", final.ReturnValue, ldapschema.ReturnCode(final.ReturnValue))
	}
	if found := w.storedProblems(f.flow, v, final.Name, v.reads); len(found) > 0 {
		return errors.New(strings.Join(found, "; "))
	}
	f.good, f.goodReads = final.Name, maps.Clone(v.reads)
	return nil
}

// storedProblems checks a successful backup as the flow's storage keeps it.
func (w *world) storedProblems(flow *opFlow, v *testVM, leaf string, reads map[string]byte) []string {
	if flow.chunked() {
		return w.chunkBackupProblems(v, leaf, reads)
	}
	return w.backupProblems(v, leaf)
}

// backupFlowOf is the backup flow for a family's VM (a restore family
// needs a backup first).
func backupFlowOf(f *opFlow) *opFlow {
	if !f.restore {
		return f
	}
	return &opFlow{name: "backup/" + strings.TrimPrefix(f.name, "restore/"), shape: f.shape, patterns: f.patterns, steps: backupSteps, snapshot: f.snapshot, storage: f.storage}
}

// answer is a node's answer to a step: its done mode and return value.
type answer struct {
	mode fsm.Mode
	rv   int
}

// flowRun is one execution of a flow with at most one fault.
type flowRun struct {
	w     *world
	fam   *opFamily
	flow  *opFlow
	fault hostio.Fault
	log   logrus.FieldLogger
	dn    string
	name  string // the leaf's name

	life  *life
	lives int // node starts after the first
	// libvirtd: the armed fault kills libvirtd, not the node (see
	// opPoint.libvirtd); killedLibvirtd is the operation it followed.
	libvirtd       bool
	killedLibvirtd string
	lvBack         chan struct{} // closed once a kill while a call runs is done

	// then is a chained point's second fault (opPoint.then), thenAnchor
	// its traced operation: it lands on the same occurrence of that name
	// since the first fault.
	then       hostio.Fault
	thenAnchor *opRec

	mu        sync.Mutex
	step      string         // the step the node works on now
	ops       []opRec        // through the armed seam
	after     []opRec        // through the seams of the lives after a crash
	hit       *opRec         // where the fault landed
	anchor    *opRec         // chunks storage: the fault lands on this name's nth occurrence
	seen      map[string]int // by hits
	nth       map[string]int // by the trace
	hitN      int            // the operation an anchored fault landed on
	crashedAt string

	// What the first fault set off, in every life and the settling tidy:
	// phase 1 from the first fault on, 2 once the second one landed.
	phase    int
	since    int            // operations since the first fault
	recSeen  map[string]int // by anchorName, since the first fault
	recovery []opRec        // n counts from the first fault
	thenHit  *opRec

	dur     *durability // chunks storage: which chunks are durable, by the operations
	atCrash []string    // chunks storage: what the indexes named when the node crashed

	answers  []answer
	hist     []string
	last     string
	problems []string
	hung     bool
}

func (w *world) newRun(fam *opFamily, flow *opFlow, p opPoint, log logrus.FieldLogger) *flowRun {
	r := &flowRun{w: w, fam: fam, flow: flow, fault: p.fault, log: log, libvirtd: p.libvirtd, then: p.then}
	if flow.chunked() {
		r.dur = newDurability(w)
		// A saved state in chunks storage has a few more or fewer new
		// chunks from run to run (content-defined, of a live guest's RAM),
		// so the count before an operation drifts: the fault is anchored
		// to the traced operation's name and its occurrence instead.
		if p.fault.Kind != hostio.NoFault && p.traced.name != "" && !p.byNumber {
			r.anchor = &p.traced
		}
	}
	// What a first fault sets off runs long (a re-run of the step and the
	// ones after it), and the count of its writes drifts with the size of
	// the saved state: a second fault is anchored in every storage.
	if p.chained() && p.thenTraced.name != "" && !p.byNumber {
		r.thenAnchor = &p.thenTraced
	}
	return r
}

var (
	chunkName = regexp.MustCompile(`[0-9a-f]{64}`)
	chunkDir  = regexp.MustCompile(`\.chunks/[0-9a-f]{4}`)
	tmpSuffix = regexp.MustCompile(`\.[0-9]+-[0-9]+\.tmp`)
	nodeIndex = regexp.MustCompile(`libvirt-[0-9]+-`)
)

// anchorName is an operation's name without what differs from run to run:
// a chunk's hash and directory (the guest writes new data at every point),
// a temporary file's writer number and the index libvirt gave a block node.
func anchorName(short string) string {
	short = chunkName.ReplaceAllString(short, "<chunk>")
	short = chunkDir.ReplaceAllString(short, ".chunks/<dir>")
	short = nodeIndex.ReplaceAllString(short, "libvirt-<n>-")
	return tmpSuffix.ReplaceAllString(short, ".<n>.tmp")
}

// hits says whether the armed fault lands on operation n: its number, or
// for an anchored fault the same occurrence of the traced name.
func (r *flowRun) hits(n int, op string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.anchor == nil {
		return n == r.fault.N
	}
	if r.hitN != 0 {
		return false
	}
	name := anchorName(r.short(op))
	if r.seen == nil {
		r.seen = map[string]int{}
	}
	r.seen[name]++
	if name == anchorName(r.anchor.name) && r.seen[name] == r.anchor.nth {
		r.hitN = n
		return true
	}
	return false
}

// duringDelay is how long after a call started a libvirtd point kills
// libvirtd while it runs: the calls of a small guest's snapshot and merge
// take a few tens of milliseconds (a live save some hundreds).
const duringDelay = 20 * time.Millisecond

// killLibvirtd is the armed fault of a libvirtd point: libvirtd dies with
// SIGKILL (its QEMUs run on) just after the node's call returned, or while
// it runs, and comes back as a service manager would restart it. The node
// goes on.
func (r *flowRun) killLibvirtd(op string, n int) {
	kill := func() {
		r.w.lv.Kill()
		r.w.lvUp = false
		err := r.w.restartLibvirtd()
		r.mu.Lock()
		defer r.mu.Unlock()
		r.killedLibvirtd = fmt.Sprintf("#%d %s", n, r.short(op))
		if err != nil {
			r.problem("libvirtd does not start again: %v", err)
		}
	}
	if r.fault.Kind != hostio.CrashBefore {
		kill()
		return
	}
	r.lvBack = make(chan struct{})
	go func() {
		defer close(r.lvBack)
		time.Sleep(duringDelay)
		kill()
	}()
}

func (r *flowRun) problem(format string, a ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, a...))
}

// short makes an operation's name readable: paths below the run's root and
// the leaf's name.
func (r *flowRun) short(op string) string {
	op = strings.ReplaceAll(op, r.w.root+string(filepath.Separator), "")
	if r.name != "" {
		for _, kind := range []string{"backup", "retain"} {
			dir := filepath.Join(kind, "vm-persistent", "pool-a", r.fam.vm.name, r.name)
			op = strings.ReplaceAll(op, dir+string(filepath.Separator), kind+"/…/")
			op = strings.ReplaceAll(op, dir, kind+"/…")
		}
		op = strings.ReplaceAll(op, r.name, "<leaf>")
	}
	// A rebuilt family has a new VM: the same operation keeps its name.
	op = strings.ReplaceAll(op, filepath.Join("images", "pool-a")+string(filepath.Separator), "images/")
	return strings.ReplaceAll(op, r.fam.vm.name, "<vm>")
}

// picked is what the picker chose at one operation of one seam.
type picked struct {
	fault hostio.Fault
	first bool // the point's fault; else the chain's second, or none
	since int  // its number since the first fault (0: before it)
}

// pick chooses the fault at an operation of any life's seam: the point's
// fault at its operation of the first life (armed), then, counting every
// operation since (the rest of that life, the lives after a crash, the
// settling tidy), a chained point's second fault at its own.
func (r *flowRun) pick(armed bool, n int, op string) picked {
	r.mu.Lock()
	waiting := r.phase == 0
	r.mu.Unlock()
	if armed && waiting && r.fault.Kind != hostio.NoFault && r.hits(n, op) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.phase = 1
		return picked{fault: r.fault, first: true}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase == 0 {
		return picked{}
	}
	r.since++
	if r.recSeen == nil {
		r.recSeen = map[string]int{}
	}
	name := anchorName(r.short(op))
	r.recSeen[name]++
	at := picked{since: r.since}
	if r.phase != 1 || r.then.Kind == hostio.NoFault {
		return at
	}
	if a := r.thenAnchor; a != nil && name == anchorName(a.name) && r.recSeen[name] == a.nth || a == nil && r.since == r.then.N {
		r.phase = 2
		at.fault = r.then
	}
	return at
}

// seam returns a seam for a new life: the first one's is armed (and
// traced into ops), those after a crash are traced into after; a settling
// tidy's (settle) into neither. Every one passes the picker.
func (r *flowRun) seam(settle bool) *hostio.Seam {
	armed := r.lives == 0 && !settle
	s := &hostio.Seam{}
	if armed {
		s.Arm(r.fault)
	}
	at := map[int]picked{} // by this seam's count, for its Trace
	s.Pick = func(n int, op string) hostio.Fault {
		p := r.pick(armed, n, op)
		r.mu.Lock()
		at[n] = p
		r.mu.Unlock()
		return p.fault
	}
	s.Trace = func(n int, op string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		p := at[n]
		delete(at, n)
		// An operation a crash before it or a failure kept from running.
		skipped := p.fault.Kind == hostio.FailWith || p.fault.Kind == hostio.CrashBefore && !(p.first && r.libvirtd)
		if r.dur != nil && !skipped {
			r.dur.see(op) // an operation that runs
		}
		step := r.step
		if settle {
			step = "tidy"
		}
		rec := opRec{n: n, step: step, name: r.short(op)}
		if p.since > 0 {
			sr := rec
			sr.n, sr.nth = p.since, r.recSeen[anchorName(rec.name)]
			r.recovery = append(r.recovery, sr)
			if p.fault.Kind != hostio.NoFault {
				r.thenHit = &sr
			}
		}
		if settle {
			return
		}
		if r.nth == nil {
			r.nth = map[string]int{}
		}
		r.nth[anchorName(rec.name)]++
		rec.nth = r.nth[anchorName(rec.name)]
		if !armed {
			r.after = append(r.after, rec)
			return
		}
		r.ops = append(r.ops, rec)
		if p.first {
			r.hit = &rec
		}
	}
	return s
}

// run drives the flow to its end and lets the node settle the finished
// leaf. ok is false when the leaf did not finish.
func (r *flowRun) run() (final ldapschema.Leaf, ok bool) {
	defer func() { r.life.end() }()
	if err := r.start(); err != nil {
		r.problem("start: %v", err)
		return final, false
	}
	final, ok = r.drive(time.Now().Add(flowLimit))
	if r.lvBack != nil {
		<-r.lvBack // the checks need libvirtd
	}
	if !ok {
		return final, false
	}
	r.settle()
	return final, true
}

func (r *flowRun) start() error {
	v := r.fam.vm
	if r.flow.restore {
		dn, err := control.StartRestore(r.w.store, v.name, r.fam.good, time.Now())
		r.dn, r.name = dn, r.fam.good
		return err
	}
	at := r.w.leafName()
	_, started := control.StartBackups(r.w.store, []string{v.name}, at)
	r.dn, r.name = started[0].DN, fsm.FormatTime(at)
	return started[0].Err
}

// drive moves the leaf until it is finished: whoever's turn it is acts.
func (r *flowRun) drive(deadline time.Time) (ldapschema.Leaf, bool) {
	idle := 0
	for {
		e, err := r.w.store.Get(r.dn, "*")
		if err != nil {
			r.problem("leaf %s: %v", r.dn, err)
			return ldapschema.Leaf{}, false
		}
		l, err := ldapschema.ParseLeaf(r.w.store.Tree, e)
		if err != nil {
			r.problem("leaf %s unreadable: %v", r.dn, err)
			return l, false
		}
		now := fmt.Sprintf("%s/%s/%d", l.Mode, l.State, l.ReturnValue)
		if now != r.last {
			r.last, idle = now, 0
			r.see(l)
		} else {
			idle++
		}
		mode, err := fsm.ParseMode(l.Mode)
		switch {
		case err != nil:
			r.problem("leaf in unknown mode %q", l.Mode)
			return l, false
		case mode == fsm.Finished:
			return l, true
		case idle > 8:
			r.problem("leaf stays in %s: nobody moves it", l.Mode)
			return l, false
		case time.Now().After(deadline):
			r.problem("leaf still %s after %s", l.Mode, flowLimit)
			return l, false
		case r.hung:
			return l, false
		}
		switch {
		case mode.IsRequest() && l.State == fsm.Pending, mode.IsRunning():
			r.nodeTurn(mode)
		case mode == fsm.UnretainedSmallFiles:
			r.operatorTurn(l)
		default:
			r.controlTurn(e)
		}
		if idle > 0 {
			time.Sleep(time.Duration(idle) * 100 * time.Millisecond)
		}
	}
}

// see keeps the leaf's modes and the node's answers.
func (r *flowRun) see(l ldapschema.Leaf) {
	s := l.Mode
	if l.ReturnValue != 0 {
		s += fmt.Sprintf("(rv=%d)", l.ReturnValue)
	}
	r.hist = append(r.hist, s)
	if m, err := fsm.ParseMode(l.Mode); err == nil && m.IsDone() {
		r.answers = append(r.answers, answer{mode: m, rv: l.ReturnValue})
	}
}

// nodeTurn: the node claims or resumes the step, in the life that runs now
// or, after a crash, in a new one.
func (r *flowRun) nodeTurn(mode fsm.Mode) {
	if r.life == nil || r.life.dead {
		if r.life != nil {
			r.lives++
		}
		l, err := r.w.newLife(r.seam(false), r.log, r.flow)
		if err != nil {
			r.problem("node start: %v", err)
			r.hung = true
			return
		}
		if r.flow.chunked() {
			// What a kill would leave for the next node: no index naming a
			// chunk that is not there.
			l.onCrash = func() { r.atCrash = r.w.indexProblems() }
		}
		if r.libvirtd && r.lives == 0 {
			// The first fault kills libvirtd; a chained crash, the node.
			park := l.seam.Crash
			l.seam.Crash = func(op string, n int) {
				r.mu.Lock()
				second := r.phase == 2
				r.mu.Unlock()
				if second {
					park(op, n)
					return
				}
				r.killLibvirtd(op, n)
			}
		}
		r.life = l
	}
	step := mode
	if mode.IsRunning() {
		step = mode.Request()
	}
	r.mu.Lock()
	r.step = string(step)
	r.mu.Unlock()
	at, err := r.life.reconcile(r.dn, stepLimit)
	switch {
	case at != "":
		r.crashedAt = r.short(at)
	case errors.Is(err, errHung):
		r.problem("step %s neither answered nor crashed within %s (its goroutine is left running)", step, stepLimit)
		r.hung = true
	case err != nil:
		r.log.WithError(err).Warn("crashtest: node pass over the leaf failed; again")
	}
}

// controlTurn: what controld writes next, from the leaf alone (its batch:
// every VM of a flow has a leaf name of its own).
func (r *flowRun) controlTurn(e *ldap.Entry) {
	l, err := ldapschema.WorkflowLeaf(r.w.store.Tree, e, host)
	if err != nil {
		r.problem("control read %s: %v", e.DN, err)
		return
	}
	for _, w := range fsm.Reconcile([]fsm.Leaf{l}, fsm.Facts{Now: time.Now(), Slots: fsm.NoCap}) {
		err := r.w.store.Write(w, ldapschema.ExecutionTimes(e), nil)
		if err != nil && !errors.Is(err, ldapschema.ErrConflict) {
			r.problem("control write %s: %v", w, err)
		}
	}
}

// operatorTurn: the web UI after unretainSmallFiles: cancel on a failure,
// else copy the unretained LDIF to <vm>.ldif and go on.
func (r *flowRun) operatorTurn(l ldapschema.Leaf) {
	cancel := func() {
		if err := control.CancelRestore(r.w.store, r.dn, time.Now()); err != nil {
			r.problem("cancel restore: %v", err)
		}
	}
	if l.ReturnValue != 0 {
		cancel()
		return
	}
	v := r.fam.vm
	dir := filepath.Join(r.w.retain, "vm-persistent", "pool-a", v.name, r.name)
	b, err := os.ReadFile(filepath.Join(dir, v.name+".ldif."+r.name))
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, v.name+".ldif"), b, 0o640)
	}
	if err != nil {
		r.problem("unretainSmallFiles answered 0 but the web UI finds no LDIF to go on with: %v", err)
		cancel()
		return
	}
	if err := control.ContinueRestore(r.w.store, r.dn); err != nil {
		r.problem("continue restore: %v", err)
	}
}

// settle lets a node settle the finished leaf (its tidy), as a running
// nodebackupd does when it sees the leaf finished. Its seam passes the
// picker: a chained point's second fault may land in the tidy, and a node
// that crashed there is started once more.
func (r *flowRun) settle() {
	r.life.end()
	for lives := 0; ; lives++ {
		l, err := r.w.newLife(r.seam(true), r.log, r.flow)
		if err != nil {
			r.problem("node start: %v", err)
			return
		}
		again := r.tidy(l)
		l.end()
		if !again || lives == 1 {
			return
		}
	}
}

// tidy is one life's settling of the finished leaf; again: it crashed.
func (r *flowRun) tidy(l *life) (again bool) {
	for try := 1; ; try++ {
		at, err := l.reconcile(r.dn, stepLimit)
		switch {
		case at != "":
			r.mu.Lock()
			chained := r.phase == 2 && isCrash(r.then)
			r.mu.Unlock()
			if !chained {
				r.problem("an unarmed seam crashed at %s", at)
				return false
			}
			r.crashedAt = r.short(at)
			return true
		case errors.Is(err, errHung):
			r.problem("the node's tidy of the finished leaf did not return within %s", stepLimit)
			r.hung = true
			return false
		case err == nil:
			return false
		case try == 3:
			r.problem("the node's tidy of the finished leaf keeps failing: %v", err)
			return false
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// history reads like "initialize → initialized → snapshot → ...".
func (r *flowRun) history() string { return strings.Join(r.hist, " → ") }
