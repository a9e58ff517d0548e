package workqueue

import (
	"testing"
	"time"
)

var t0 = time.Date(2012, 10, 2, 1, 0, 0, 0, time.UTC)

func newFake(t *testing.T, opts Options[string]) (*Queue[string], *FakeClock) {
	t.Helper()
	c := NewFakeClock(t0)
	opts.Clock = c
	q := New(opts)
	t.Cleanup(q.ShutDown)
	return q, c
}

// get is Get with a deadline, so a broken queue fails instead of hanging.
func get(t *testing.T, q *Queue[string]) string {
	t.Helper()
	type res struct {
		key  string
		shut bool
	}
	ch := make(chan res, 1)
	go func() { k, s := q.Get(); ch <- res{k, s} }()
	select {
	case r := <-ch:
		if r.shut {
			t.Fatal("Get: queue shut down")
		}
		return r.key
	case <-time.After(5 * time.Second):
		t.Fatal("Get: nothing came")
	}
	return ""
}

// wantGet fails the test unless the next key is want; why says what a
// different key would mean.
func wantGet(t *testing.T, q *Queue[string], want, why string) {
	t.Helper()
	if k := get(t, q); k != want {
		t.Fatalf("Get = %s, want %s %s", k, want, why)
	}
}

func TestAddManyTimesWhileWaitingIsOneVisit(t *testing.T) {
	q, _ := newFake(t, Options[string]{})
	for i := 0; i < 5; i++ {
		q.Add("a")
	}
	q.Add("b")
	if n := q.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	wantGet(t, q, "a", "(first in)")
	wantGet(t, q, "b", "")
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d after both were taken", n)
	}
}

func TestAddWhileProcessingComesBackAfterDone(t *testing.T) {
	q, _ := newFake(t, Options[string]{})
	q.Add("a")
	k := get(t, q)
	q.Add("a")
	q.Add("a")
	if n := q.Len(); n != 0 {
		t.Fatalf("a was queued while held: Len = %d", n)
	}
	q.Done(k)
	if n := q.Len(); n != 1 {
		t.Fatalf("Len after Done = %d, want 1", n)
	}
	wantGet(t, q, "a", "")
	q.Done("a")
	if n := q.Len(); n != 0 {
		t.Fatalf("Len = %d after a second Done", n)
	}
}

func TestAddAfter(t *testing.T) {
	q, c := newFake(t, Options[string]{})
	q.AddAfter("a", 10*time.Second)
	q.AddAfter("b", 0) // no delay: at once
	wantGet(t, q, "b", "")
	c.Step(9 * time.Second)
	if n := q.Len(); n != 0 {
		t.Fatalf("a came early: Len = %d", n)
	}
	c.Step(time.Second)
	wantGet(t, q, "a", "")
}

func TestAddAfterKeepsTheEarlierTime(t *testing.T) {
	q, c := newFake(t, Options[string]{})
	q.AddAfter("a", time.Minute)
	q.AddAfter("a", 5*time.Second)
	q.AddAfter("a", 2*time.Minute)
	c.Step(5 * time.Second)
	wantGet(t, q, "a", "")
	q.Done("a")
	// The later entries were folded into the one that fired.
	c.Step(5 * time.Minute)
	q.Add("z")
	wantGet(t, q, "z", "a came twice")
}

func TestAddAfterOrdersByDueTime(t *testing.T) {
	q, c := newFake(t, Options[string]{})
	q.AddAfter("late", 3*time.Second)
	q.AddAfter("early", time.Second)
	q.AddAfter("middle", 2*time.Second)
	var got []string
	for i := 0; i < 3; i++ {
		c.Step(time.Second)
		got = append(got, get(t, q))
	}
	if got[0] != "early" || got[1] != "middle" || got[2] != "late" {
		t.Fatalf("order %v", got)
	}
}

func TestBackoff(t *testing.T) {
	q, _ := newFake(t, Options[string]{BaseDelay: time.Second, MaxDelay: time.Minute})
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
	for n, w := range want {
		if d := q.backoff(n); d != w*time.Second {
			t.Errorf("backoff(%d) = %s, want %s", n, d, w*time.Second)
		}
	}
	if d := q.backoff(5000); d != time.Minute {
		t.Errorf("backoff overflows: %s", d)
	}
	d, _ := newFake(t, Options[string]{})
	if d.backoff(0) != DefaultBaseDelay || d.backoff(100) != DefaultMaxDelay {
		t.Errorf("defaults: %s %s", d.backoff(0), d.backoff(100))
	}
}

func TestAddRateLimitedBacksOffPerKey(t *testing.T) {
	q, c := newFake(t, Options[string]{BaseDelay: time.Second, MaxDelay: 4 * time.Second})
	for i, wait := range []time.Duration{1, 2, 4, 4} {
		q.AddRateLimited("a")
		if n := q.NumRequeues("a"); n != i+1 {
			t.Fatalf("NumRequeues = %d, want %d", n, i+1)
		}
		c.Step(wait*time.Second - time.Millisecond)
		if q.Len() != 0 {
			t.Fatalf("attempt %d came before %s", i, wait*time.Second)
		}
		c.Step(time.Millisecond)
		wantGet(t, q, "a", "")
		q.Done("a")
	}
	if q.NumRequeues("b") != 0 {
		t.Fatal("b shares a's backoff")
	}
	q.Forget("a")
	if q.NumRequeues("a") != 0 {
		t.Fatal("Forget kept the count")
	}
	q.AddRateLimited("a")
	c.Step(time.Second)
	wantGet(t, q, "a", "after Forget the delay is the base again")
}

func TestShutDown(t *testing.T) {
	q, c := newFake(t, Options[string]{})
	q.AddAfter("x", time.Hour)
	waitFor(t, func() bool { return c.Waiters() == 1 })
	done := make(chan bool)
	go func() { _, shut := q.Get(); done <- shut }()
	q.ShutDown()
	select {
	case shut := <-done:
		if !shut {
			t.Fatal("Get returned a key after ShutDown")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Get still blocks after ShutDown")
	}
	q.Add("a")
	q.AddAfter("b", time.Second)
	q.AddRateLimited("c")
	c.Step(time.Hour)
	if q.Len() != 0 || !q.ShuttingDown() {
		t.Fatalf("adds after ShutDown were kept: Len = %d", q.Len())
	}
	if c.Waiters() != 0 {
		t.Fatalf("%d timers still armed after ShutDown", c.Waiters())
	}
	q.ShutDown() // twice is harmless
}

func TestRealClock(t *testing.T) {
	q := New(Options[string]{})
	defer q.ShutDown()
	q.AddAfter("a", 10*time.Millisecond)
	wantGet(t, q, "a", "")
}

// A struct key dedups by value, as a string key does: the controller's batch
// keys are typed, not strings with separators.
func TestStructKeys(t *testing.T) {
	type batch struct{ host, name string }
	q := New(Options[batch]{Clock: NewFakeClock(t0)})
	defer q.ShutDown()
	q.Add(batch{"h1", "a"})
	q.Add(batch{"h1", "a"})
	q.Add(batch{"h1\x00a", ""}) // would collide with a joined string key
	if n := q.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	if k, _ := q.Get(); k != (batch{"h1", "a"}) {
		t.Fatalf("Get = %+v", k)
	}
}
