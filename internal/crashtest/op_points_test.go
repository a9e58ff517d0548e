package crashtest

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// The operation-level points: which ones a run takes, how they are named,
// how one is asked for again. Pure: no service, no clock.

// envPoints selects the operation points of TestOpPoints: "sample" (the
// default, what `make test` runs), "all" (`make crashtest`), "chains" (the
// sample's first points and every chained point they lead to), or a comma
// separated list of point keys to replay, e.g.
// "backup/running#17:crash-after,restore/running#4:fail:ENOSPC".
const envPoints = "CRASHTEST_POINTS"

// envFlows, if set, names the flows to run (comma separated), e.g.
// "backup/running-chunks,restore/running-chunks"; else every flow runs.
const envFlows = "CRASHTEST_FLOWS"

// opRec is one operation a flow passed through the seam.
type opRec struct {
	n    int    // counted from 1 since the flow started
	step string // the request it belongs to: snapshot, merge, retain, ...
	name string // as the seam was told, with the run's paths shortened
	nth  int    // the occurrence of its anchorName in the flow, from 1
}

// opPoint is one fault at one operation of one flow.
type opPoint struct {
	flow   string
	fault  hostio.Fault
	traced opRec // what the tracing run did at that operation
	// byNumber: in chunks storage, where a fault is anchored to its
	// operation's name, a run again of a point whose anchor did not come
	// lands on the operation's number instead.
	byNumber bool
	// libvirtd: libvirtd is killed (and restarted) instead of the node,
	// just after the operation, a call to it (fault CrashAfter), or while
	// the call runs (CrashBefore: the kill follows its start by
	// duringDelay). The node lives on and meets a libvirtd that lost what
	// it was doing.
	libvirtd bool
	// then, in a chained point, is a second fault inside what the first
	// set off (the rollback of a failure, the re-run after a crash or
	// after libvirtd's death, the tidy of the failed leaf): at the
	// then.N-th operation after the first fault's, counted over every
	// life. thenTraced is what the run with the first fault alone did
	// there (n counted so, nth among those operations).
	then       hostio.Fault
	thenTraced opRec
}

// chained: the point has a second fault.
func (p opPoint) chained() bool { return p.then.Kind != hostio.NoFault }

// The keys' names of libvirtd points.
const (
	libvirtdAfter  = "libvirtd-after"
	libvirtdDuring = "libvirtd-during"
)

// duringCall matches the calls libvirtd may die in the middle of: those
// that run long (a save, a restore, a boot), the start of a block pull and
// of a live snapshot's block copy. Not its pivot and commit: a libvirtd
// killed inside one of those loses track of QEMU's block graph
// (docs/crashes.md, "libvirtd killed inside a live snapshot's switch").
var duringCall = regexp.MustCompile(`^(live save|save|restore|resume|start|block pull) |^copy \S+ onto `)

// hypervisorCall matches the operations that are calls to libvirtd (the
// libvirt adapter names them so); a libvirtd point follows each of them.
var hypervisorCall = regexp.MustCompile(`^(live save|save|restore|resume|start|define|destroy|pivot|commit|block pull|block job abort|cancel the block job|abort the job|end the live save|limit the pause) |^copy \S+ onto `)

// errnoAt alternates the injected errors: EIO at odd operations, ENOSPC at
// even ones.
func errnoAt(n int) syscall.Errno {
	if n%2 == 0 {
		return syscall.ENOSPC
	}
	return syscall.EIO
}

func isCrash(f hostio.Fault) bool { return f.Kind == hostio.CrashBefore || f.Kind == hostio.CrashAfter }

// kind is the point's fault without its number, or which libvirtd point.
func (p opPoint) kind() string {
	switch {
	case p.libvirtd && p.fault.Kind == hostio.CrashBefore:
		return libvirtdDuring
	case p.libvirtd:
		return libvirtdAfter
	}
	return kindName(p.fault)
}

// thenKind is the second fault of a chained point: "then crash-after at +3".
func (p opPoint) thenKind() string {
	return fmt.Sprintf("then %s at +%d", kindName(p.then), p.then.N)
}

// kindName is the fault without its number: crash-before, crash-after, fail EIO.
func kindName(f hostio.Fault) string {
	s := f.String()
	if i := strings.Index(s, ":"); i >= 0 {
		kind, rest := s[:i], s[i+1:]
		if j := strings.Index(rest, ":"); j >= 0 {
			return kind + " " + rest[j+1:]
		}
		return kind
	}
	return s
}

// key names a point so that CRASHTEST_POINTS can ask for it again.
func (p opPoint) key() string {
	s := p.fault.String() // crash-after:17 or fail:17:EIO
	kind, rest, _ := strings.Cut(s, ":")
	n, errno, _ := strings.Cut(rest, ":")
	if p.libvirtd {
		kind = p.kind()
	}
	k := fmt.Sprintf("%s#%s:%s", p.flow, n, kind)
	if errno != "" {
		k += ":" + errno
	}
	if p.chained() {
		kind, rest, _ := strings.Cut(p.then.String(), ":")
		n, errno, _ := strings.Cut(rest, ":")
		k += "+" + n + ":" + kind
		if errno != "" {
			k += ":" + errno
		}
	}
	return k
}

// parseKey reads a key made by opPoint.key.
func parseKey(k string) (opPoint, error) {
	first, then, chained := strings.Cut(strings.TrimSpace(k), "+")
	flow, rest, ok := strings.Cut(first, "#")
	bad := fmt.Errorf("point %q: want <flow>#<N>:crash-before|crash-after|fail:EIO|fail:ENOSPC|%s|%s, chained maybe with +<M>:crash-before|crash-after|fail:EIO|fail:ENOSPC", k, libvirtdAfter, libvirtdDuring)
	if !ok || flow == "" {
		return opPoint{}, bad
	}
	var second hostio.Fault
	if chained {
		m, kind, ok := strings.Cut(then, ":")
		kind, errno, _ := strings.Cut(kind, ":")
		spec := kind + ":" + m
		if errno != "" {
			spec += ":" + errno
		}
		f, err := hostio.ParseFault(spec)
		if !ok || err != nil {
			return opPoint{}, bad
		}
		second = f
	}
	n, fault, ok := strings.Cut(rest, ":")
	if !ok {
		return opPoint{}, bad
	}
	kind, errno, _ := strings.Cut(fault, ":")
	p := opPoint{flow: flow, libvirtd: (kind == libvirtdAfter || kind == libvirtdDuring) && errno == ""}
	switch {
	case p.libvirtd && kind == libvirtdAfter:
		kind = "crash-after"
	case p.libvirtd:
		kind = "crash-before"
	}
	spec := kind + ":" + n
	if errno != "" {
		spec += ":" + errno
	}
	var err error
	if p.fault, err = hostio.ParseFault(spec); err != nil {
		return opPoint{}, bad
	}
	p.then = second
	return p, nil
}

// selection is what CRASHTEST_POINTS asked for.
type selection struct {
	all bool
	// chains: the sample's first points, then every chained point of
	// what they set off (as all does with every point's).
	chains bool
	keys   map[string][]opPoint // flow → the points to replay; nil: a rule
	flows  []string             // the flows to run; nil: all
}

// runs: the selection has points in flow.
func (s selection) runs(flow string) bool {
	if s.flows != nil && !contains(s.flows, flow) {
		return false
	}
	return s.keys == nil || len(s.keys[flow]) > 0
}

// parseFlows reads CRASHTEST_FLOWS; every name must be a flow's.
func parseFlows(s string, known []string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if !contains(known, f) {
			return nil, fmt.Errorf("%s: no flow %q (flows: %s)", envFlows, f, strings.Join(known, ", "))
		}
		out = append(out, f)
	}
	return out, nil
}

func parseSelection(s string) (selection, error) {
	switch strings.TrimSpace(s) {
	case "", "sample":
		return selection{}, nil
	case "all":
		return selection{all: true}, nil
	case "chains":
		return selection{chains: true}, nil
	}
	sel := selection{keys: map[string][]opPoint{}}
	for _, k := range strings.Split(s, ",") {
		if strings.TrimSpace(k) == "" {
			continue
		}
		p, err := parseKey(k)
		if err != nil {
			return sel, err
		}
		sel.keys[p.flow] = append(sel.keys[p.flow], p)
	}
	return sel, nil
}

func selectionFromEnv(known []string) (selection, error) {
	sel, err := parseSelection(os.Getenv(envPoints))
	if err != nil {
		return sel, err
	}
	sel.flows, err = parseFlows(os.Getenv(envFlows), known)
	return sel, err
}

func (s selection) String() string {
	in := ""
	if s.flows != nil {
		in = " of " + strings.Join(s.flows, ", ")
	}
	switch {
	case s.all:
		return "all points" + in
	case s.chains:
		return "the sample and every chained point it leads to" + in
	case s.keys != nil:
		return "the points asked for in " + envPoints
	}
	return "the sample" + in + " (" + envPoints + "=all for every point)"
}

// points are the faults to inject into a flow whose tracing run did ops.
// sampled limits the sample to the operations of those steps (nil: all).
func (s selection) points(flow string, ops []opRec, sampled []string) []opPoint {
	at := func(n int) opRec {
		if n >= 1 && n <= len(ops) {
			return ops[n-1]
		}
		return opRec{n: n, name: "(beyond the traced operations)"}
	}
	var out []opPoint
	switch {
	case s.keys != nil:
		for _, p := range s.keys[flow] {
			p.traced = at(p.fault.N)
			out = append(out, p)
		}
	case s.all:
		for _, op := range ops {
			out = append(out, allFaults(flow, op)...)
		}
	default:
		out = samplePoints(flow, ops, sampled)
	}
	return out
}

// allFaults: crash before, crash after and fail, at one operation, and
// at a call to libvirtd its death while the call runs and just after.
func allFaults(flow string, op opRec) []opPoint {
	out := []opPoint{
		{flow: flow, fault: hostio.Fault{Kind: hostio.CrashBefore, N: op.n}, traced: op},
		{flow: flow, fault: hostio.Fault{Kind: hostio.CrashAfter, N: op.n}, traced: op},
		{flow: flow, fault: hostio.Fault{Kind: hostio.FailWith, N: op.n, Errno: errnoAt(op.n)}, traced: op},
	}
	if duringCall.MatchString(op.name) {
		out = append(out, libvirtdPoint(flow, op, hostio.CrashBefore))
	}
	if hypervisorCall.MatchString(op.name) {
		out = append(out, libvirtdPoint(flow, op, hostio.CrashAfter))
	}
	return out
}

func libvirtdPoint(flow string, op opRec, kind hostio.FaultKind) opPoint {
	return opPoint{flow: flow, fault: hostio.Fault{Kind: kind, N: op.n}, traced: op, libvirtd: true}
}

// verb is the kind of an operation: the first word of its name.
func verb(name string) string {
	v, _, _ := strings.Cut(name, " ")
	return v
}

// samplePoints is the fixed sample `make test` runs. In every step of the
// flow: a crash before its first operation, a failure of its middle one and
// a crash after its last one (the moment between the work and its answer).
// Then, once per kind of operation (its verb: rename, write, define...),
// its first operation in the flow not sampled yet, with in turn a crash
// after, a failure and a crash before; and libvirtd's death at the first
// call of each kind to it, in turn while it runs and just after. With sampled, only the operations of
// those steps are.
func samplePoints(flow string, ops []opRec, sampled []string) []opPoint {
	if sampled != nil {
		ops = slices.DeleteFunc(slices.Clone(ops), func(o opRec) bool { return !contains(sampled, o.step) })
	}
	var out []opPoint
	chosen := map[int]bool{}
	take := func(op opRec, kind int) {
		chosen[op.n] = true
		p := allFaults(flow, op)[kind]
		for _, q := range out {
			if q.fault == p.fault && !q.libvirtd {
				return
			}
		}
		out = append(out, p)
	}
	const before, after, fail = 0, 1, 2
	for _, step := range stepsOf(ops) {
		var in []opRec
		for _, op := range ops {
			if op.step == step {
				in = append(in, op)
			}
		}
		take(in[0], before)
		take(in[len(in)/2], fail)
		take(in[len(in)-1], after)
	}
	seen := map[string]bool{}
	turn := 0
	for _, op := range ops {
		v := verb(op.name)
		if seen[v] {
			continue
		}
		seen[v] = true
		if chosen[op.n] {
			continue
		}
		take(op, []int{after, fail, before}[turn%3])
		turn++
	}
	// libvirtd dies once at each kind of call to it, in turn while it runs
	// and just after.
	calls := map[string]bool{}
	for _, op := range ops {
		if v := verb(op.name); hypervisorCall.MatchString(op.name) && !calls[v] {
			calls[v] = true
			kind := hostio.CrashAfter
			if len(calls)%2 == 0 && duringCall.MatchString(op.name) {
				kind = hostio.CrashBefore
			}
			out = append(out, libvirtdPoint(flow, op, kind))
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].fault.N < out[j].fault.N })
	return out
}

// chainPoints are a flow's chained points, taken from what its first
// points set off (opResult.recovery, of those that held): at each
// operation of a recovery that the flow without a fault never does in
// that step (a rollback's, a re-run's own, the failed leaf's tidy), after
// the first point that reached it. With all, the three faults at each;
// else the first such operation of each verb in each step, with in turn
// a crash after, a failure and a crash before.
func chainPoints(trace []opRec, firsts []opResult, all bool) []opPoint {
	known := map[string]bool{}
	for _, o := range trace {
		known[o.step+" "+anchorName(o.name)] = true
	}
	seen := map[string]bool{}
	var out []opPoint
	turn := 0
	for _, r := range firsts {
		if !r.held() || r.p.chained() {
			continue
		}
		for _, o := range r.recovery {
			k := o.step + " " + anchorName(o.name)
			if known[k] || seen[k] {
				continue
			}
			seen[k] = true
			faults := []hostio.Fault{
				{Kind: hostio.CrashAfter, N: o.n},
				{Kind: hostio.FailWith, N: o.n, Errno: errnoAt(o.n)},
				{Kind: hostio.CrashBefore, N: o.n},
			}
			if !all {
				v := "verb " + o.step + " " + verb(o.name)
				if seen[v] {
					continue
				}
				seen[v] = true
				faults = faults[turn%3 : turn%3+1]
				turn++
			}
			for _, f := range faults {
				p := r.p
				p.then, p.thenTraced = f, o
				out = append(out, p)
			}
		}
	}
	return out
}

// TestChainPoints: a chained point's key reads back; the second faults go
// to what only a recovery does, once per operation of it (the first point
// that reached it), three kinds with all, one per verb in the sample; a
// point that did not hold sets nothing off.
func TestChainPoints(t *testing.T) {
	trace := []opRec{
		{n: 1, step: "snapshot", name: "rename a to b"},
		{n: 2, step: "snapshot", name: "save vm to s"},
		{n: 3, step: "retain", name: "write x.partial"},
	}
	fail := opPoint{flow: "f", fault: hostio.Fault{Kind: hostio.FailWith, N: 2, Errno: syscall.ENOSPC}, traced: trace[1]}
	crash := opPoint{flow: "f", fault: hostio.Fault{Kind: hostio.CrashAfter, N: 1}, traced: trace[0]}
	firsts := []opResult{
		{p: fail, recovery: []opRec{
			{n: 1, step: "snapshot", name: "rename b to a", nth: 1},
			{n: 2, step: "snapshot", name: "remove b.overlay", nth: 1},
			{n: 3, step: "snapshot", name: "remove c.overlay", nth: 1},
			{n: 4, step: "tidy", name: "remove all of intent", nth: 1},
		}},
		{p: crash, recovery: []opRec{
			{n: 1, step: "snapshot", name: "rename a to b", nth: 1}, // the re-run does what the trace did
			{n: 2, step: "snapshot", name: "rename b to a", nth: 1}, // reached by the first already
			{n: 3, step: "retain", name: "write x.partial", nth: 1},
			{n: 4, step: "tidy", name: "remove all of intent", nth: 1},
			{n: 5, step: "tidy", name: "remove the stray node", nth: 1},
		}},
		{p: opPoint{flow: "f", fault: hostio.Fault{Kind: hostio.CrashBefore, N: 3}}, problems: []string{"broke"},
			recovery: []opRec{{n: 1, step: "retain", name: "remove y", nth: 1}}},
	}
	all := chainPoints(trace, firsts, true)
	var keys []string
	for _, p := range all {
		keys = append(keys, p.key()+" "+p.thenTraced.name)
		back, err := parseKey(p.key())
		if err != nil || back.flow != p.flow || back.fault != p.fault || back.then != p.then || back.libvirtd != p.libvirtd {
			t.Errorf("key %q reads back as %+v (%v)", p.key(), back, err)
		}
	}
	want := []string{
		"f#2:fail:ENOSPC+1:crash-after rename b to a", "f#2:fail:ENOSPC+1:fail:EIO rename b to a", "f#2:fail:ENOSPC+1:crash-before rename b to a",
		"f#2:fail:ENOSPC+2:crash-after remove b.overlay", "f#2:fail:ENOSPC+2:fail:ENOSPC remove b.overlay", "f#2:fail:ENOSPC+2:crash-before remove b.overlay",
		"f#2:fail:ENOSPC+3:crash-after remove c.overlay", "f#2:fail:ENOSPC+3:fail:EIO remove c.overlay", "f#2:fail:ENOSPC+3:crash-before remove c.overlay",
		"f#2:fail:ENOSPC+4:crash-after remove all of intent", "f#2:fail:ENOSPC+4:fail:ENOSPC remove all of intent", "f#2:fail:ENOSPC+4:crash-before remove all of intent",
		"f#1:crash-after+5:crash-after remove the stray node", "f#1:crash-after+5:fail:EIO remove the stray node", "f#1:crash-after+5:crash-before remove the stray node",
	}
	if !slices.Equal(keys, want) {
		t.Errorf("all chained points:\n  %s\nwant\n  %s", strings.Join(keys, "\n  "), strings.Join(want, "\n  "))
	}
	keys = nil
	for _, p := range chainPoints(trace, firsts, false) {
		keys = append(keys, p.key())
	}
	// One per verb and step: rename, remove in the snapshot; remove in the tidy.
	if want := []string{"f#2:fail:ENOSPC+1:crash-after", "f#2:fail:ENOSPC+2:fail:ENOSPC", "f#2:fail:ENOSPC+4:crash-before"}; !slices.Equal(keys, want) {
		t.Errorf("sampled chained points %v, want %v", keys, want)
	}
	// Every regression names a flow and a first fault, and is anchored.
	for _, r := range regressions {
		flow, _, _ := strings.Cut(r.first, "#")
		if !slices.ContainsFunc(opFlows, func(f opFlow) bool { return f.name == flow }) {
			t.Errorf("regression %s: no flow %q", r.first, flow)
			continue
		}
		got, err := regressionPoints(flow, trace)
		if err != nil || !slices.ContainsFunc(got, func(p opPoint) bool { return p.chained() && p.thenTraced.name == r.at && p.thenTraced.nth == 1 }) {
			t.Errorf("regression %s then %s: %v (%v)", r.first, r.at, got, err)
		}
	}
	if p, err := parseKey("backup/running#30:libvirtd-during+12:fail:EIO"); err != nil || !p.libvirtd || p.fault.Kind != hostio.CrashBefore ||
		p.then != (hostio.Fault{Kind: hostio.FailWith, N: 12, Errno: syscall.EIO}) || p.key() != "backup/running#30:libvirtd-during+12:fail:EIO" {
		t.Errorf("a chained libvirtd point reads as %+v, key %q (%v)", p, p.key(), err)
	}
}

// regressions are chained points that once failed, run with the sample:
// the first fault by its key, the second anchored to its operation's name
// (its first occurrence since the first fault), so that each stays on the
// operation it found broken when the operations' numbers move.
var regressions = []struct {
	first string
	then  hostio.Fault // N: where it was when it failed
	at    string
}{
	// A re-run that finished a live rollback answered 1, not the code of
	// the failure behind it.
	{"backup/running#33:fail:EIO", hostio.Fault{Kind: hostio.CrashAfter, N: 3}, "remove retain/…/<vm>.xml"},
	// An undo that removed the overlay, then failed to rename the image
	// back, left the disk's path empty and the VM stopped.
	{"backup/running-save#20:fail:ENOSPC", hostio.Fault{Kind: hostio.FailWith, N: 3, Errno: syscall.EIO}, "rename <vm>-vda.qcow2 to images/<vm>-vda.qcow2"},
	// A restore whose put-back failed too answered 21 and left the
	// restored VM running, its record open for ever.
	{"restore/running#72:fail:ENOSPC", hostio.Fault{Kind: hostio.FailWith, N: 2, Errno: syscall.ENOSPC}, "destroy <vm>"},
}

// regressionPoints are flow's regressions, their first faults at the
// traced operations.
func regressionPoints(flow string, ops []opRec) ([]opPoint, error) {
	var out []opPoint
	for _, r := range regressions {
		p, err := parseKey(r.first)
		if err != nil {
			return nil, err
		}
		if p.flow != flow {
			continue
		}
		if n := p.fault.N; n >= 1 && n <= len(ops) {
			p.traced = ops[n-1]
		}
		p.then, p.thenTraced = r.then, opRec{n: r.then.N, name: r.at, nth: 1}
		out = append(out, p)
	}
	return out, nil
}

// stepsOf lists the steps of ops in the order they first appear.
func stepsOf(ops []opRec) []string {
	var steps []string
	seen := map[string]bool{}
	for _, op := range ops {
		if !seen[op.step] {
			seen[op.step] = true
			steps = append(steps, op.step)
		}
	}
	return steps
}

// stepCounts reads like "snapshot 12, merge 3, retain 40".
func stepCounts(ops []opRec, want []string) string {
	n := map[string]int{}
	for _, op := range ops {
		n[op.step]++
	}
	var parts []string
	for _, s := range want {
		parts = append(parts, s+" "+strconv.Itoa(n[s]))
	}
	for _, s := range stepsOf(ops) {
		if !contains(want, s) {
			parts = append(parts, s+" "+strconv.Itoa(n[s]))
		}
	}
	return strings.Join(parts, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOpPointSelection: the sample reaches every step and every kind of
// fault, a point's key asks for that same point again, and "all" is three
// faults at every operation and libvirtd's death at every call to it.
func TestOpPointSelection(t *testing.T) {
	var ops []opRec
	add := func(step string, names ...string) {
		for _, n := range names {
			ops = append(ops, opRec{n: len(ops) + 1, step: step, name: n})
		}
	}
	add("snapshot", "intent record a", "save vm to s", "rename a to b", "rename c to d", "intent record a")
	add("merge", "block pull vda", "block pull vdb")
	add("retain", "create x.partial", "write x.partial", "write x.partial", "fsync x.partial", "rename x.partial to x")

	sample := samplePoints("backup/running", ops, nil)
	steps := map[string]bool{}
	kinds := map[string]bool{}
	lastAfter := map[string]bool{}
	for _, p := range sample {
		steps[p.traced.step] = true
		kinds[verb(kindName(p.fault))] = true
		if p.fault.Kind == hostio.CrashAfter {
			lastAfter[p.traced.step+"#"+strconv.Itoa(p.fault.N)] = true
		}
		back, err := parseKey(p.key())
		if err != nil || back.flow != p.flow || back.fault != p.fault || back.libvirtd != p.libvirtd {
			t.Errorf("key %q reads back as %+v (%v)", p.key(), back, err)
		}
	}
	for _, s := range []string{"snapshot", "merge", "retain"} {
		if !steps[s] {
			t.Errorf("the sample misses step %s: %v", s, sample)
		}
	}
	for _, want := range []string{"snapshot#5", "merge#7", "retain#12"} {
		if !lastAfter[want] {
			t.Errorf("the sample has no crash after the last operation of a step (%s)", want)
		}
	}
	for _, k := range []string{"crash-before", "crash-after", "fail"} {
		if !kinds[k] {
			t.Errorf("the sample has no %s point", k)
		}
	}
	var dies []string
	for _, p := range sample {
		if p.libvirtd {
			dies = append(dies, p.key())
		}
	}
	if want := []string{"backup/running#2:libvirtd-after", "backup/running#6:libvirtd-during"}; !slices.Equal(dies, want) {
		t.Errorf("libvirtd dies in the sample at %v, want once at each kind of call to it: %v", dies, want)
	}
	if len(sample) >= 3*len(ops) {
		t.Errorf("the sample (%d points) is no smaller than all points (%d)", len(sample), 3*len(ops))
	}

	// A flow that samples only its retain (the others' points are another
	// flow's) has points in the retain alone, all kinds of them.
	retainOnly := samplePoints("backup/running-chunks", ops, []string{"retain"})
	kinds = map[string]bool{}
	for _, p := range retainOnly {
		kinds[verb(kindName(p.fault))] = true
		if p.traced.step != "retain" {
			t.Errorf("the sample of the retain alone has a point in %s: %v", p.traced.step, p)
		}
	}
	if len(kinds) != 3 || !slices.ContainsFunc(retainOnly, func(p opPoint) bool { return p.fault.N == 12 && p.fault.Kind == hostio.CrashAfter }) {
		t.Errorf("the sample of the retain alone: %v", retainOnly)
	}

	all, err := parseSelection("all")
	if err != nil {
		t.Fatal(err)
	}
	if got := all.points("backup/running", ops, []string{"retain"}); len(got) != 3*len(ops)+6 {
		t.Errorf("all points: %d, want %d (three at each operation, libvirtd's death in and after each of its 3 calls)", len(got), 3*len(ops)+6)
	}
	// libvirtd dies inside a call only where that is covered; after any.
	if n := len(allFaults("f", opRec{n: 1, name: "pivot vda of vm"})); n != 4 {
		t.Errorf("%d points at a pivot, want 3 and libvirtd's death after it", n)
	}
	if n := len(allFaults("f", opRec{n: 1, name: "live save vm to s"})); n != 5 {
		t.Errorf("%d points at a live save, want 3 and libvirtd's death in and after it", n)
	}
	replay, err := parseSelection("backup/running#8:fail:ENOSPC, restore/running#2:crash-after, backup/running#6:libvirtd-during")
	if err != nil {
		t.Fatal(err)
	}
	got := replay.points("backup/running", ops, nil)
	if len(got) != 2 || got[0].fault != (hostio.Fault{Kind: hostio.FailWith, N: 8, Errno: syscall.ENOSPC}) || got[0].traced.name != "create x.partial" ||
		!got[1].libvirtd || got[1].fault != (hostio.Fault{Kind: hostio.CrashBefore, N: 6}) || got[1].traced.name != "block pull vda" {
		t.Errorf("replay of backup/running#8:fail:ENOSPC and #6:libvirtd-during gives %+v", got)
	}
	if len(replay.points("backup/shut-off", ops, nil)) != 0 {
		t.Errorf("a replay runs points of a flow it did not name")
	}
	known := []string{"backup/running", "restore/running-chunks"}
	if fl, err := parseFlows(" restore/running-chunks", known); err != nil || !(selection{all: true, flows: fl}).runs("restore/running-chunks") || (selection{flows: fl}).runs("backup/running") {
		t.Errorf("%s=restore/running-chunks selects %v (%v)", envFlows, fl, err)
	}
	if _, err := parseFlows("backup/runnin", known); err == nil {
		t.Errorf("%s accepts a flow that does not exist", envFlows)
	}
	if !replay.runs("restore/running") || replay.runs("backup/shut-off") {
		t.Errorf("a replay runs the flows it did not name, or not those it named")
	}
	for _, bad := range []string{"backup/running", "backup/running#x:crash-after", "backup/running#3:fail:EPERM", "#3:crash-before", "backup/running#3:libvirtd-after:EIO",
		"backup/running#3:fail:EIO+", "backup/running#3:fail:EIO+2", "backup/running#3:fail:EIO+0:crash-after", "backup/running#3:fail:EIO+2:libvirtd-after"} {
		if _, err := parseSelection(bad); err == nil {
			t.Errorf("selection %q accepted", bad)
		}
	}
}
