package fsm

import (
	"errors"
	"math/rand"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestParseMode(t *testing.T) {
	for _, m := range Modes() {
		got, err := ParseMode(string(m))
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %q, %v", m, got, err)
		}
	}
	// The directory is compared exactly: near misses are foreign values.
	for _, s := range []string{"", "Snapshot", "snapshot ", "unretainsmallfiles", "done", "(absent)"} {
		if m, err := ParseMode(s); !errors.Is(err, ErrUnknownMode) {
			t.Errorf("ParseMode(%q) = %q, %v; want ErrUnknownMode", s, m, err)
		}
	}
	if n := len(Modes()); n != 24 {
		t.Errorf("%d modes, want 24", n)
	}
}

func TestModeSteps(t *testing.T) {
	for _, s := range steps {
		for _, m := range []Mode{s.request, s.running, s.done} {
			if m.Request() != s.request || m.Running() != s.running || m.Done() != s.done {
				t.Errorf("%s: step %s/%s/%s", m, m.Request(), m.Running(), m.Done())
			}
		}
		if !s.request.IsRequest() || s.request.IsRunning() || s.request.IsDone() {
			t.Errorf("%s is not only a request", s.request)
		}
		if !s.running.IsRunning() || s.running.IsRequest() || s.running.IsDone() {
			t.Errorf("%s is not only running", s.running)
		}
		if !s.done.IsDone() || s.done.IsRequest() || s.done.IsRunning() {
			t.Errorf("%s is not only done", s.done)
		}
	}
	for _, m := range []Mode{Absent, Initialize, Initialized, Finished} {
		if m.IsRequest() || m.IsRunning() || m.IsDone() || m.Running() != Absent || m.Done() != Absent {
			t.Errorf("%s belongs to no step", m)
		}
	}
	if Snapshot.Running() != Snapshotting || Snapshotting.Done() != Snapshotted || Merged.Request() != Merge {
		t.Error("the seed's own example does not hold")
	}
}

func TestIsRestore(t *testing.T) {
	want := map[Mode]bool{
		UnretainSmallFiles: true, UnretainingSmallFiles: true, UnretainedSmallFiles: true,
		UnretainLargeFiles: true, UnretainingLargeFiles: true, UnretainedLargeFiles: true,
		Restore: true, Restoring: true, Restored: true,
	}
	for _, m := range Modes() {
		if m.IsRestore() != want[m] {
			t.Errorf("%s.IsRestore() = %v", m, m.IsRestore())
		}
	}
}

func TestCheckError(t *testing.T) {
	err := Check(Node, Snapshotted, Merge)
	var te *TransitionError
	if !errors.Is(err, ErrNotAllowed) || !errors.As(err, &te) {
		t.Fatalf("Check = %v, want a *TransitionError wrapping ErrNotAllowed", err)
	}
	if te.Side != Node || te.From != Snapshotted || te.To != Merge {
		t.Errorf("error carries %v %s %s", te.Side, te.From, te.To)
	}
	if err := Check(Side(7), Snapshot, Snapshotting); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("unknown side: %v", err)
	}
	if _, err := Transition(Node, Leaf{Mode: Snapshot}, Snapshotting, ""); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("Transition by the node: %v", err)
	}
}

// TestCheckTable compares Check with the edge list for every pair, so the
// looplab machines built from it agree with it exactly.
func TestCheckTable(t *testing.T) {
	allowed := map[edge]bool{}
	for _, e := range edges {
		allowed[e] = true
	}
	all := append([]Mode{Absent}, Modes()...)
	for _, side := range []Side{Control, Node, Operator} {
		n := 0
		for _, from := range all {
			for _, to := range all {
				err := Check(side, from, to)
				if (err == nil) != allowed[edge{side, from, to}] {
					t.Errorf("Check(%s, %s, %s) = %v", side, from, to, err)
				}
				if err == nil {
					n++
				}
			}
		}
		if n == 0 {
			t.Errorf("%s may do nothing", side)
		}
	}
}

func TestCheckConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				if Check(Node, Merge, Merging) != nil || Check(Node, Merge, Merged) == nil {
					t.Error("Check gave a wrong answer under concurrency")
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestTime(t *testing.T) {
	zurich := time.FixedZone("CEST", 2*3600)
	at := time.Date(2012, 10, 2, 3, 0, 0, 0, zurich)
	if s := FormatTime(at); s != "20121002T010000Z" {
		t.Errorf("FormatTime = %s", s)
	}
	back, err := ParseTime("20121002T010000Z")
	if err != nil || !back.Equal(at) {
		t.Errorf("ParseTime = %v, %v", back, err)
	}
	if _, err := ParseTime("2012-10-02"); err == nil {
		t.Error("ParseTime accepted a foreign form")
	}
}

func TestClaimAndComplete(t *testing.T) {
	if _, ok := Claim(Leaf{Mode: Snapshot, State: "20121002T010000Z"}); ok {
		t.Error("claimed a request whose State is not pending")
	}
	if _, ok := Claim(Leaf{Mode: Snapshotting, State: Pending}); ok {
		t.Error("claimed a claim")
	}
	w, ok := Claim(Leaf{Key: "k", Mode: Retain, State: Pending})
	want := Write{Key: "k", From: Retain, To: Retaining, IfState: Pending, Reason: "claimed"}
	if !ok || !reflect.DeepEqual(w, want) {
		t.Errorf("Claim = %+v, %v", w, ok)
	}
	w = Complete(Leaf{Key: "k", Mode: Retaining}, 8, "20121002T010500Z")
	if w.From != Retaining || w.To != Retained || w.State != "20121002T010500Z" || w.ReturnValue == nil || *w.ReturnValue != 8 || w.Check(Node) != nil {
		t.Errorf("Complete = %v", w)
	}
}

func TestBatches(t *testing.T) {
	ls := []Leaf{
		{Key: "3", VM: "b", Host: "h2", Name: "N1"},
		{Key: "2", VM: "b", Host: "h1", Name: "N1"},
		{Key: "1", VM: "a", Host: "h1", Name: "N1"},
		{Key: "4", VM: "a", Host: "h1", Name: "N2"},
	}
	var got [][]string
	for _, b := range Batches(ls) {
		var keys []string
		for _, l := range b {
			keys = append(keys, l.Key)
		}
		got = append(got, keys)
	}
	want := [][]string{{"1", "2"}, {"4"}, {"3"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Batches = %v, want %v", got, want)
	}
}

// TestConverges runs a batch of three VMs to the end under every outcome of
// every node step (0 or a failure for snapshot, merge and retain), with the
// node answering a random subset of the claims each round. It checks the
// invariants of the seed's plan on every state controld could read.
func TestConverges(t *testing.T) {
	vms := []string{"a", "b", "c"}
	const stepsPerVM = 3 // snapshot, merge, retain
	rng := rand.New(rand.NewSource(1))
	for plan := 0; plan < 1<<(len(vms)*stepsPerVM); plan++ {
		// rcFor tells what the node answers for vm i at a step of the backup.
		rcFor := func(i int, m Mode) int {
			bit := map[Mode]int{Snapshotting: 0, Merging: 1, Retaining: 2}[m]
			if plan>>(i*stepsPerVM+bit)&1 == 1 {
				return 10 + bit
			}
			return 0
		}
		leaves := map[string]*Leaf{}
		for _, vm := range vms {
			leaves[vm] = &Leaf{Key: vm, VM: vm, Host: "h", Name: "N", Mode: Initialize}
		}
		apply := func(w Write) {
			l := leaves[w.Key]
			if l.Mode != w.From {
				return // a lost swap
			}
			l.Mode = w.To
			if w.State != "" {
				l.State = w.State
			}
			if w.ReturnValue != nil {
				l.ReturnValue = *w.ReturnValue
			}
			if w.Backup != nil {
				b := *w.Backup
				l.Backup = &b
			}
		}
		snapshot := func() []Leaf {
			var ls []Leaf
			for _, vm := range vms {
				ls = append(ls, *leaves[vm])
			}
			return ls
		}

		for round := 0; ; round++ {
			if round > 200 {
				t.Fatalf("plan %09b: no end after 200 rounds: %v", plan, snapshot())
			}
			state := snapshot()
			checkInvariants(t, plan, state)
			f := Facts{Now: mustTime("20121002T010000Z").Add(time.Duration(round) * time.Second), Slots: NoCap}
			stamp := FormatTime(f.Now)
			ws := Reconcile(state, f)
			if again := Reconcile(state, f); !reflect.DeepEqual(ws, again) {
				t.Fatalf("plan %09b: not deterministic", plan)
			}
			waiting := false
			for _, l := range state {
				waiting = waiting || l.Mode.IsRequest() || l.Mode.IsRunning()
			}
			if len(ws) == 0 && !waiting {
				break
			}
			for _, w := range ws {
				if err := w.Check(Control); err != nil {
					t.Fatal(err)
				}
				apply(w)
			}
			for i, vm := range vms {
				if rng.Intn(3) == 0 {
					continue // this node is slow this round
				}
				l := *leaves[vm]
				if w, ok := Claim(l); ok {
					apply(w)
				} else if l.Mode.IsRunning() {
					apply(Complete(l, rcFor(i, l.Mode), stamp))
				}
			}
		}

		for i, vm := range vms {
			l := leaves[vm]
			want := 0
			for _, m := range []Mode{Snapshotting, Merging, Retaining} {
				if rc := rcFor(i, m); rc != 0 {
					want = rc
					break
				}
			}
			if l.Mode != Finished || l.ReturnValue != want {
				t.Errorf("plan %09b: %s ended %s rv=%d, want finished rv=%d", plan, vm, l.Mode, l.ReturnValue, want)
			}
		}
	}
}

func checkInvariants(t *testing.T, plan int, batch []Leaf) {
	t.Helper()
	inSnapshot, inMerge := 0, 0
	for _, l := range batch {
		switch l.Mode {
		case Initialize, Initialized, Snapshot, Snapshotting:
			inSnapshot++
		case Merge, Merging, Retain, Retaining:
			inMerge++
		case Merged:
			if l.ReturnValue == 0 {
				inMerge++
			}
		}
	}
	if inMerge > 1 {
		t.Fatalf("plan %09b: %d VMs merge or retain at once: %v", plan, inMerge, batch)
	}
	if inMerge > 0 && inSnapshot > 0 {
		t.Fatalf("plan %09b: a merge started before the batch's snapshots ended: %v", plan, batch)
	}
}

func TestOverdueLimitsOnlyWaitingModes(t *testing.T) {
	since := time.Date(2012, 10, 2, 1, 0, 0, 0, time.UTC)
	limits := Limits{}
	for _, m := range Modes() {
		limits[m] = time.Minute
	}
	for _, m := range Modes() {
		w, ok := Overdue(Leaf{Key: "k", Mode: m}, since.Add(time.Hour), since, limits, 1)
		if ok != (m.IsRequest() || m.IsRunning()) {
			t.Errorf("Overdue(%s) = %v", m, ok)
		}
		if !ok {
			continue
		}
		if w.To != Finished || w.Check(Control) != nil || w.State != "20121002T020000Z" {
			t.Errorf("Overdue(%s) = %v", m, w)
		}
		if m.isRestoreStep() {
			// The restore failed, not the backup: its code goes to the
			// restore's record, the backup's stays (where it is known).
			if w.LastRestore == nil || w.LastRestore.Code != 1 || (w.ReturnValue != nil && *w.ReturnValue != 0) {
				t.Errorf("Overdue(%s) = %v", m, w)
			}
		} else if *w.ReturnValue != 1 || *w.Backup != 1 {
			t.Errorf("Overdue(%s) = %v", m, w)
		}
	}
}

// TestTableMachines reads the table a second way, through the looplab
// machine of each side, and checks that Check agrees on every pair of modes.
func TestTableMachines(t *testing.T) {
	all := append([]Mode{Absent}, Modes()...)
	for _, side := range []Side{Control, Node, Operator} {
		m := machines[side]
		if m == nil {
			t.Fatalf("no machine for %s", side)
		}
		n := 0
		for _, from := range all {
			for _, to := range all {
				m.SetState(stateName(from))
				can := m.Can(stateName(to))
				if ok := Check(side, from, to) == nil; ok != can {
					t.Errorf("%s %s -> %s: Check says %v, looplab %v", side, from, to, ok, can)
				}
				if can {
					n++
				}
			}
		}
		if n == 0 {
			t.Errorf("%s may write nothing", side)
		}
	}
}
