package control

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

func quiet() *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	l.SetOutput(&logBuffer{})
	return l
}

func runController(t *testing.T, o Options) (stop func()) {
	t.Helper()
	c := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func addVMWithLeaves(t *testing.T, st *ldapschema.Store, vm, host string, n int, mode string) []string {
	t.Helper()
	if err := st.Add(ldapschema.NewVMAddRequest(st.Tree, ldapschema.VM{Name: vm, Node: host})); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureBackupEntry(vm); err != nil {
		t.Fatal(err)
	}
	var dns []string
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		name := fsm.FormatTime(base.Add(time.Duration(i) * time.Second))
		if err := st.Add(ldapschema.NewLeafAddRequest(st.Tree, vm, name, mode, name)); err != nil {
			t.Fatal(err)
		}
		dns = append(dns, st.Tree.Leaf(vm, name))
	}
	return dns
}

func waitMode(t *testing.T, st *ldapschema.Store, dn, mode string, limit time.Duration) ldapschema.Leaf {
	t.Helper()
	deadline := time.Now().Add(limit)
	var l ldapschema.Leaf
	for time.Now().Before(deadline) {
		if e, err := st.Get(dn, "*"); err == nil {
			l, _ = ldapschema.ParseLeaf(st.Tree, e)
			if l.Mode == mode {
				return l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not %s within %v (last %+v)", dn, mode, limit, l)
	return l
}

// Two controlds, both active, race over 1,000 hand-overs (initialize →
// initialized → snapshot on 500 leaves): every write happens exactly once.
func TestTwoControldsNoDoubleWrites(t *testing.T) {
	_, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	dns := addVMWithLeaves(t, st, "vm-race", "h1", 500, string(fsm.Initialize))
	var mu sync.Mutex
	count := map[string]int{}
	rec := func(w fsm.Write) {
		mu.Lock()
		count[w.Key+" "+string(w.To)]++
		mu.Unlock()
	}
	for i := 0; i < 2; i++ {
		s := testenv.DialStore(t, st.Options())
		runController(t, Options{Store: s, Log: quiet(), OnWrite: rec, NoLease: true})
	}
	for _, dn := range dns {
		waitMode(t, st, dn, string(fsm.Snapshot), 60*time.Second)
	}
	mu.Lock()
	defer mu.Unlock()
	writes := 0
	for k, n := range count {
		if n != 1 {
			t.Errorf("%s written %d times", k, n)
		}
		writes += n
	}
	if writes != 2*len(dns) {
		t.Fatalf("%d writes, want %d", writes, 2*len(dns))
	}
}

// A leaf nobody answers fails once its mode's deadline passed, with a
// description saying why; a node's progress write restarts the count.
func TestDeadline(t *testing.T) {
	_, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	dns := addVMWithLeaves(t, st, "vm-late", "h1", 1, string(fsm.Snapshot))
	if err := st.Update(dns[0], "", map[string][]string{ldapschema.AttrState: {"0"}}); err != nil {
		t.Fatal(err)
	}
	runController(t, Options{Store: st, Log: quiet(), NoLease: true, Limits: fsm.Limits{fsm.Snapshot: 1500 * time.Millisecond}})
	start := time.Now()
	l := waitMode(t, st, dns[0], string(fsm.Finished), 30*time.Second)
	if l.ReturnValue != int(TimeoutCode) {
		t.Fatalf("return value %d, want %d", l.ReturnValue, TimeoutCode)
	}
	if time.Since(start) < time.Second {
		t.Fatalf("failed after %v, before its deadline", time.Since(start))
	}
	e, _ := st.Get(dns[0], ldapschema.AttrDescription)
	if d := e.GetAttributeValue(ldapschema.AttrDescription); d == "" {
		t.Fatal("no description says why the leaf failed")
	}
}

// The leaves of a host whose node stopped renewing its lease fail within the
// node timeout; another host's leaves wait on.
func TestVanishedNode(t *testing.T) {
	_, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	gone := addVMWithLeaves(t, st, "vm-gone", "h-gone", 1, string(fsm.Snapshotting))
	alive := addVMWithLeaves(t, st, "vm-alive", "h-alive", 1, string(fsm.Snapshotting))
	now := time.Now()
	old := &ldapschema.Lease{Store: st, DN: st.Tree.NodeLease("h-gone"), Holder: "x", TTL: time.Second}
	if ok, _, err := old.Acquire(now.Add(-time.Minute)); !ok || err != nil {
		t.Fatal(ok, err)
	}
	live := &ldapschema.Lease{Store: st, DN: st.Tree.NodeLease("h-alive"), Holder: "y", TTL: time.Hour}
	if ok, _, err := live.Acquire(now); !ok || err != nil {
		t.Fatal(ok, err)
	}
	runController(t, Options{Store: st, Log: quiet(), NoLease: true, NodeTimeout: time.Second})
	l := waitMode(t, st, gone[0], string(fsm.Finished), 30*time.Second)
	if l.ReturnValue == 0 {
		t.Fatal("a vanished node's leaf finished with 0")
	}
	time.Sleep(500 * time.Millisecond)
	e, _ := st.Get(alive[0], ldapschema.AttrMode)
	if m := e.GetAttributeValue(ldapschema.AttrMode); m != string(fsm.Snapshotting) {
		t.Fatalf("a live node's leaf was moved to %s", m)
	}
}

// Of two controlds one is active; when it stops, the standby takes over and
// carries on the work.
func TestStandbyTakesOver(t *testing.T) {
	_, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	dns := addVMWithLeaves(t, st, "vm-lead", "h1", 2, string(fsm.Retained))
	var mu sync.Mutex
	by := map[string]int{}
	mk := func(name string) Options {
		return Options{Store: testenv.DialStore(t, st.Options()), Log: quiet(), Holder: name, LeaseTTL: 2 * time.Second,
			OnWrite: func(fsm.Write) { mu.Lock(); by[name]++; mu.Unlock() }}
	}
	stopA := runController(t, mk("a"))
	waitMode(t, st, dns[0], string(fsm.Finished), 30*time.Second)
	runController(t, mk("b"))
	time.Sleep(time.Second)
	mu.Lock()
	if by["b"] != 0 {
		t.Fatalf("the standby wrote %d times while the active one ran", by["b"])
	}
	mu.Unlock()
	stopA()
	// New work after the active one left: the standby does it.
	if err := st.Update(dns[1], "", map[string][]string{ldapschema.AttrMode: {string(fsm.Retained)}}); err != nil {
		t.Fatal(err)
	}
	extra := addLeaf(t, st, "vm-lead", "20300101T010000Z", string(fsm.Retained))
	waitMode(t, st, extra, string(fsm.Finished), 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if by["b"] == 0 {
		t.Fatal("the standby never took over")
	}
}

func addLeaf(t *testing.T, st *ldapschema.Store, vm, name, mode string) string {
	t.Helper()
	if err := st.Add(ldapschema.NewLeafAddRequest(st.Tree, vm, name, mode, name)); err != nil {
		t.Fatal(err)
	}
	return st.Tree.Leaf(vm, name)
}

// A merge longer than its deadline is not failed while the node writes
// progress (each write restarts the count), and is failed once the writes
// stop: the deadline measures a stall, not the length of the work.
func TestMergingDeadlineFollowsProgress(t *testing.T) {
	_, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	dns := addVMWithLeaves(t, st, "vm-merge", "h1", 1, string(fsm.Merging))
	const limit = 4 * time.Second
	runController(t, Options{Store: st, Log: quiet(), NoLease: true, Limits: fsm.Limits{fsm.Merging: limit}})
	start := time.Now()
	for i := 0; time.Since(start) < 3*limit; i++ {
		line := fmt.Sprintf("progress: merge %d.0 MiB of 64.0 MiB", i)
		if err := st.Update(dns[0], "("+ldapschema.AttrMode+"="+string(fsm.Merging)+")",
			map[string][]string{ldapschema.AttrExecutionTime: {line}}); err != nil {
			t.Fatalf("after %v: progress write refused (the leaf was failed while it progressed?): %v", time.Since(start), err)
		}
		time.Sleep(time.Second)
	}
	stalled := time.Now()
	l := waitMode(t, st, dns[0], string(fsm.Finished), 3*limit)
	if l.ReturnValue != int(TimeoutCode) {
		t.Fatalf("return value %d, want %d", l.ReturnValue, TimeoutCode)
	}
	if d := time.Since(stalled); d < limit-time.Second {
		t.Fatalf("failed %v after the last progress, before its deadline of %v", d, limit)
	}
}

// A restore step that runs out of time fails the restore, not the backup:
// the leaf stays restorable and its return value is the backup's again.
func TestOverdueRestoreKeepsBackupRestorable(t *testing.T) {
	_, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	dns := addVMWithLeaves(t, st, "vm-late-restore", "h1", 1, string(fsm.UnretainingLargeFiles))
	if err := st.Update(dns[0], "", map[string][]string{
		ldapschema.AttrExecutionTime: {ldapschema.FormatBackupRecord(0)}}); err != nil {
		t.Fatal(err)
	}
	runController(t, Options{Store: st, Log: quiet(), NoLease: true, Limits: fsm.Limits{fsm.UnretainingLargeFiles: 1500 * time.Millisecond}})
	l := waitMode(t, st, dns[0], string(fsm.Finished), 30*time.Second)
	if l.ReturnValue != 0 {
		t.Errorf("return value %d: the restore's timeout was written over the backup's 0", l.ReturnValue)
	}
	if l.LastRestore == nil || l.LastRestore.Result != string(fsm.RestoreFailed) || l.LastRestore.Code != int(TimeoutCode) {
		t.Errorf("restore record %+v, want failed with %d", l.LastRestore, TimeoutCode)
	}
	if !Restorable(l) {
		t.Error("the backup is no longer offered for a restore")
	}
}
