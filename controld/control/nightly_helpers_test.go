package control

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/internal/workqueue"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// waitLimit guards against a hang; nothing here waits for it to pass.
const waitLimit = 20 * time.Second

// world is one test's directory (its own slapd), fake clock and controller.
type world struct {
	t      *testing.T
	slapd  *testenv.Slapd
	store  *ldapschema.Store
	clock  *workqueue.FakeClock
	loc    *time.Location
	rec    *recorder
	ctrl   *Controller
	stop   func()
	logBuf *logBuffer
}

func newWorld(t *testing.T, now time.Time) *world {
	t.Helper()
	s, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	return &world{t: t, slapd: s, store: st, clock: workqueue.NewFakeClock(now), loc: zurich(t), rec: newRecorder()}
}

// start runs a controller with nightly operation until the test ends (or
// w.stop), and waits for its first view of the directory.
func (w *world) start(mod func(*Options)) {
	w.t.Helper()
	w.logBuf = &logBuffer{}
	log := logrus.New()
	log.SetOutput(w.logBuf)
	log.SetLevel(logrus.DebugLevel)
	o := Options{
		Store: w.slapd.AdminStore(w.t), Log: log, OnWrite: w.rec.write,
		// The fake clock moves by days; leaves left waiting on purpose must
		// not run into their deadlines (liveness_test.go tests those).
		Limits: fsm.Limits{},
		Nightly: &NightlyOptions{
			Location: w.loc, Clock: w.clock, CatchUpWindow: DefaultCatchUpWindow,
			OnPlan: w.rec.plan, OnFire: w.rec.fire,
		},
	}
	if mod != nil {
		mod(&o)
	}
	w.ctrl = New(o)
	w.ctrl.Cache().OnEvent(func(ldapschema.Event) { w.rec.touch() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.ctrl.Run(ctx); close(done) }()
	var once sync.Once
	w.stop = func() { once.Do(func() { cancel(); <-done }) }
	w.t.Cleanup(w.stop)
	sctx, scancel := context.WithTimeout(context.Background(), waitLimit)
	defer scancel()
	if err := w.ctrl.WaitPlanned(sctx); err != nil {
		w.t.Fatal("controller never planned:", err)
	}
}

// at is a Zurich wall-clock time.
func (w *world) at(y int, m time.Month, d, h, min int) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, w.loc)
}

// nightly is a global-style configuration: daily at h:m, n iterations.
func nightly(min, hour string, n int) ldapschema.BackupConfig {
	return ldapschema.BackupConfig{
		CronMinute: []string{min}, CronHour: []string{hour}, CronDay: []string{"*"},
		CronMonth: []string{"*"}, CronDayOfWeek: []string{"*"}, CronActive: true, Iterations: n,
	}
}

func (w *world) addVM(host, pool, name string, cfg *ldapschema.BackupConfig) {
	w.t.Helper()
	if err := testenv.VMEntries(w.store, host, pool, name, nil, cfg); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) addConfig(dn string, cfg ldapschema.BackupConfig) {
	w.t.Helper()
	if err := w.store.Add(ldapschema.NewBackupConfigAddRequest(dn, cfg)); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) addPool(pool string) {
	w.t.Helper()
	req := ldap.NewAddRequest(w.store.Tree.Pool(pool), nil)
	req.Attribute("objectClass", []string{"top", ldapschema.ClassPool})
	req.Attribute(ldapschema.AttrVirtualMachinePool, []string{pool})
	req.Attribute(ldapschema.AttrDisplayName, []string{pool})
	req.Attribute(ldapschema.AttrVirtualMachinePoolType, []string{"persistent"})
	if err := w.store.Add(req); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) update(dn string, attrs map[string][]string) {
	w.t.Helper()
	if err := w.store.Update(dn, "", attrs); err != nil {
		w.t.Fatal(err)
	}
}

// addLeaf writes a leaf as if an earlier run had left it.
func (w *world) addLeaf(vm, name, mode string, rv int) string {
	w.t.Helper()
	if err := w.store.EnsureBackupEntry(vm); err != nil {
		w.t.Fatal(err)
	}
	req := ldapschema.NewLeafAddRequest(w.store.Tree, vm, name, mode, name)
	for i := range req.Attributes {
		if req.Attributes[i].Type == ldapschema.AttrReturnValue {
			req.Attributes[i].Vals = []string{fmt.Sprint(rv)}
		}
	}
	if err := w.store.Add(req); err != nil {
		w.t.Fatal(err)
	}
	return w.store.Tree.Leaf(vm, name)
}

// leaves reads vm's leaves from the directory: name → mode.
func (w *world) leaves(vm string) map[string]string {
	w.t.Helper()
	es, err := w.store.Search(w.store.Tree.VMBackup(vm), ldap.ScopeSingleLevel, "(objectClass=sstProvisioning)", []string{"ou", ldapschema.AttrMode})
	if err != nil && !errors.Is(err, ldapschema.ErrNotFound) {
		w.t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range es {
		out[e.GetAttributeValue("ou")] = e.GetAttributeValue(ldapschema.AttrMode)
	}
	return out
}

func names(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// finish ends a leaf waiting for its snapshot as a node failing or passing it
// would, and waits until the controller has seen it.
func (w *world) finish(dn string, rv int) {
	w.t.Helper()
	w.rec.waitWrite(w.t, dn, fsm.Snapshot)
	if err := w.store.ChangeMode(ldapschema.ModeChange{DN: dn, From: "snapshot", To: "finished", ReturnValue: &rv}); err != nil {
		w.t.Fatal(err)
	}
	w.waitCached(dn, "finished")
}

// waitCached waits until the controller's cache shows dn in mode.
func (w *world) waitCached(dn, mode string) {
	w.t.Helper()
	w.rec.wait(w.t, dn+" "+mode+" in the cache", func() bool {
		e, ok := w.ctrl.Cache().Get(dn)
		return ok && e.GetAttributeValue(ldapschema.AttrMode) == mode
	})
}

// fireAt moves the clock to t and waits for the scheduler's firing there.
func (w *world) fireAt(t time.Time) Fired {
	w.t.Helper()
	n := w.rec.fireCount()
	w.clock.Set(t)
	var f Fired
	w.rec.wait(w.t, "a firing at "+t.String(), func() bool {
		if len(w.rec.fires) > n {
			f = w.rec.fires[len(w.rec.fires)-1]
			return true
		}
		return false
	})
	return f
}

// recorder collects what the controller reports; tests wait on it instead
// of sleeping.
type recorder struct {
	mu     sync.Mutex
	writes []fsm.Write
	fires  []Fired
	plans  map[string]Plan
	signal chan struct{}
}

func newRecorder() *recorder {
	return &recorder{plans: map[string]Plan{}, signal: make(chan struct{})}
}

func (r *recorder) notifyLocked() {
	close(r.signal)
	r.signal = make(chan struct{})
}

func (r *recorder) write(w fsm.Write) {
	r.mu.Lock()
	r.writes = append(r.writes, w)
	r.notifyLocked()
	r.mu.Unlock()
}

func (r *recorder) fire(f Fired) {
	r.mu.Lock()
	r.fires = append(r.fires, f)
	r.notifyLocked()
	r.mu.Unlock()
}

// plan runs under the scheduler's lock; it only records.
func (r *recorder) plan(p Plan) {
	r.mu.Lock()
	r.plans[p.VM] = p
	r.notifyLocked()
	r.mu.Unlock()
}

// touch wakes waiters: the controller's cache changed.
func (r *recorder) touch() {
	r.mu.Lock()
	r.notifyLocked()
	r.mu.Unlock()
}

func (r *recorder) fireCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.fires)
}

// wait returns once cond (called with r.mu held) holds.
func (r *recorder) wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		ch := r.signal
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("waiting for %s: not within %v", what, waitLimit)
		}
	}
}

// wrote reports whether the controller wrote dn into mode to (r.mu held).
func (r *recorder) wroteLocked(dn string, to fsm.Mode) bool {
	for _, w := range r.writes {
		if w.To == to && ldapschema.NormalizeDN(w.Key) == ldapschema.NormalizeDN(dn) {
			return true
		}
	}
	return false
}

func (r *recorder) waitWrite(t testing.TB, dn string, to fsm.Mode) {
	t.Helper()
	r.wait(t, fmt.Sprintf("%s → %s", dn, to), func() bool { return r.wroteLocked(dn, to) })
}

type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fakeNode answers every request in the directory at once, as nodebackupd
// would with instant steps: claim, then answer in one modify. Retain makes
// <root>/vm-persistent/<pool>/<vm>/<leaf>/ with one file, delete removes it.
// It records, in the directory's own order of changes, the most leaves of
// one host ever between snapshot and retained.
type fakeNode struct {
	t     testing.TB
	store *ldapschema.Store
	root  string

	mu      sync.Mutex
	fail    map[string]int    // VM → return value of its snapshots
	vmHost  map[string]string // VM → host
	vmPool  map[string]string
	modes   map[string]string // leaf DN → mode
	maxWork map[string]int    // host → most working leaves seen at once
}

func startFakeNode(t *testing.T, s *testenv.Slapd) *fakeNode {
	t.Helper()
	n := &fakeNode{
		t: t, store: s.AdminStore(t), root: t.TempDir(), fail: map[string]int{},
		vmHost: map[string]string{}, vmPool: map[string]string{}, modes: map[string]string{}, maxWork: map[string]int{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		n.store.Watch(ctx, ldapschema.WatchOptions{
			Base:   n.store.Tree.VirtualMachines(),
			Filter: "(|(objectClass=sstProvisioning)(objectClass=sstVirtualizationVirtualMachine))",
			Attrs:  []string{"*"},
		}, n.onEvent)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

func (n *fakeNode) failVM(vm string, rv int) {
	n.mu.Lock()
	n.fail[vm] = rv
	n.mu.Unlock()
}

func (n *fakeNode) maxWorking(host string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.maxWork[host]
}

func (n *fakeNode) dir(pool, vm, leaf string) string {
	return filepath.Join(n.root, "vm-persistent", pool, vm, leaf)
}

func (n *fakeNode) onEvent(ev ldapschema.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch ev.Kind {
	case ldapschema.EventDelete:
		delete(n.modes, ev.DN)
		return
	case ldapschema.EventPut:
	default:
		return
	}
	e := ev.Entry
	if !isLeaf(e) {
		vm := e.GetAttributeValue(ldapschema.AttrVirtualMachine)
		n.vmHost[vm] = e.GetAttributeValue(ldapschema.AttrNode)
		n.vmPool[vm] = e.GetAttributeValue(ldapschema.AttrVirtualMachinePool)
		return
	}
	n.modes[e.DN] = e.GetAttributeValue(ldapschema.AttrMode)
	count := map[string]int{}
	for dn, m := range n.modes {
		if fsm.HoldsSlot(fsm.Mode(m)) {
			vm, _ := leafVM(n.store.Tree, dn)
			count[n.vmHost[vm]]++
		}
	}
	for h, c := range count {
		if c > n.maxWork[h] {
			n.maxWork[h] = c
		}
	}
	mode, err := fsm.ParseMode(e.GetAttributeValue(ldapschema.AttrMode))
	if err != nil || !mode.IsRequest() || e.GetAttributeValue(ldapschema.AttrState) != fsm.Pending {
		return
	}
	vm, leaf := leafVM(n.store.Tree, e.DN)
	if err := n.store.ChangeMode(ldapschema.ModeChange{DN: e.DN, From: string(mode), To: string(mode.Running())}); err != nil {
		return // someone else's, or gone
	}
	rv, times := 0, []string(nil)
	dir := n.dir(n.vmPool[vm], vm, leaf)
	switch mode {
	case fsm.Snapshot:
		rv = n.fail[vm]
		times = []string{"snapshot: 1.500", "downtime: 0.500"}
	case fsm.Merge:
		times = []string{"snapshot: 1.500", "downtime: 0.500", "merge: 0.250"}
	case fsm.Retain:
		if err := os.MkdirAll(dir, 0o755); err != nil {
			rv = int(ldapschema.RCCannotCreateDirectory)
		} else if err := os.WriteFile(filepath.Join(dir, vm+".xml."+leaf), []byte("<domain/>"), 0o644); err != nil {
			rv = int(ldapschema.RCCannotWriteBackup)
		}
		times = []string{"snapshot: 1.500", "downtime: 0.500", "merge: 0.250", "retain: 0.250", "retainBytes: 75316594"}
	case fsm.Delete:
		if err := os.RemoveAll(dir); err != nil {
			rv = int(ldapschema.RCCannotRemoveFile)
		}
	}
	stamp := fsm.FormatTime(time.Now())
	if err := n.store.ChangeMode(ldapschema.ModeChange{DN: e.DN, From: string(mode.Running()), To: string(mode.Done()),
		State: stamp, ReturnValue: &rv, ExecutionTime: times}); err != nil {
		n.t.Errorf("fake node: answer %s: %v", e.DN, err)
	}
}

// dirs lists the backup directories of vm.
func (n *fakeNode) dirs(pool, vm string) []string {
	n.t.Helper()
	ents, err := os.ReadDir(filepath.Join(n.root, "vm-persistent", pool, vm))
	if err != nil && !os.IsNotExist(err) {
		n.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
