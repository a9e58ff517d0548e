package workqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond: for what only another goroutine can make true.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

type failure struct {
	key   string
	err   error
	retry bool
}

// runQueue starts Run on a fake-clock queue; failures arrive on the channel.
func runQueue(t *testing.T, opts Options[string], workers int, fn func(context.Context, string) error) (*Queue[string], *FakeClock, <-chan failure) {
	t.Helper()
	fails := make(chan failure, 100)
	opts.OnError = func(key string, err error, retry bool) { fails <- failure{key, err, retry} }
	q, c := newFake(t, opts)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { q.Run(ctx, workers, fn); close(stopped) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return q, c, fails
}

func next(t *testing.T, fails <-chan failure) failure {
	t.Helper()
	select {
	case f := <-fails:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no failure reported")
	}
	return failure{}
}

func TestRunNeverGivesAKeyToTwoWorkers(t *testing.T) {
	const keys, adds = 5, 2000
	var (
		mu      sync.Mutex
		active  = map[string]int{}
		added   [keys]atomic.Int64 // adds per key so far
		visited [keys]atomic.Int64 // the add count a visit started after
		overlap atomic.Bool
	)
	q, _, _ := runQueue(t, Options[string]{}, 8, func(_ context.Context, key string) error {
		var i int
		fmt.Sscanf(key, "k%d", &i)
		visited[i].Store(added[i].Load())
		mu.Lock()
		active[key]++
		if active[key] > 1 {
			overlap.Store(true)
		}
		mu.Unlock()
		time.Sleep(50 * time.Microsecond)
		mu.Lock()
		active[key]--
		mu.Unlock()
		return nil
	})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for n := 0; n < adds/4; n++ {
				i := (n + g) % keys
				added[i].Add(1)
				q.Add(fmt.Sprintf("k%d", i))
			}
		}(g)
	}
	wg.Wait()
	// Every key is visited once more after its last Add, even if that Add
	// came while a worker held it.
	waitFor(t, func() bool {
		for i := range keys {
			if visited[i].Load() != added[i].Load() {
				return false
			}
		}
		return true
	})
	if overlap.Load() {
		t.Fatal("a key was handed to two workers at once")
	}
}

func TestRunRetriesWithBackoffThenForgets(t *testing.T) {
	var calls atomic.Int32
	boom := errors.New("ldap: busy")
	q, c, fails := runQueue(t, Options[string]{BaseDelay: time.Second, MaxDelay: time.Minute}, 2,
		func(_ context.Context, key string) error {
			if calls.Add(1) <= 2 {
				return fmt.Errorf("modify %s: %w", key, boom)
			}
			return nil
		})
	q.Add("dn")
	for i, wait := range []time.Duration{time.Second, 2 * time.Second} {
		f := next(t, fails)
		if !errors.Is(f.err, boom) || !f.retry || f.key != "dn" {
			t.Fatalf("failure %d: %+v", i, f)
		}
		waitFor(t, func() bool { return q.NumRequeues("dn") == i+1 && c.Waiters() == 1 })
		c.Step(wait - time.Millisecond)
		if n := calls.Load(); n != int32(i+1) {
			t.Fatalf("retried before its backoff: %d calls", n)
		}
		c.Step(time.Millisecond)
	}
	waitFor(t, func() bool { return calls.Load() == 3 && q.NumRequeues("dn") == 0 })
}

func TestRunRecoversPanics(t *testing.T) {
	var calls atomic.Int32
	q, c, fails := runQueue(t, Options[string]{BaseDelay: time.Second}, 1, func(_ context.Context, key string) error {
		if calls.Add(1) == 1 {
			var m map[string]int
			m[key]++ // a nil map: the kind of bug that must not kill the daemon
		}
		return nil
	})
	q.Add("dn")
	f := next(t, fails)
	var pe *PanicError
	if !errors.As(f.err, &pe) || pe.Key != "dn" || !f.retry {
		t.Fatalf("failure %+v", f)
	}
	if !strings.Contains(fmt.Sprint(pe.Value), "nil map") || !strings.Contains(string(pe.Stack), "run_test.go") {
		t.Fatalf("panic value %v, stack:\n%s", pe.Value, pe.Stack)
	}
	waitFor(t, func() bool { return c.Waiters() == 1 })
	c.Step(time.Second)
	// The same single worker survived and ran it again.
	waitFor(t, func() bool { return calls.Load() == 2 && q.NumRequeues("dn") == 0 })
}

func TestRunDoesNotRetryTerminalErrors(t *testing.T) {
	var calls atomic.Int32
	bad := errors.New("unknown provisioning mode")
	q, c, fails := runQueue(t, Options[string]{BaseDelay: time.Second, MaxDelay: time.Minute}, 2,
		func(_ context.Context, key string) error {
			calls.Add(1)
			return fmt.Errorf("leaf %s: %w", key, Terminal(bad))
		})
	q.Add("dn")
	f := next(t, fails)
	if f.retry || !IsTerminal(f.err) || !errors.Is(f.err, bad) {
		t.Fatalf("failure %+v", f)
	}
	// No backoff armed, nothing more however long we wait.
	c.Step(time.Hour)
	if c.Waiters() != 0 || q.NumRequeues("dn") != 0 || q.Len() != 0 || calls.Load() != 1 {
		t.Fatalf("terminal error retried: %d calls, %d waiters", calls.Load(), c.Waiters())
	}
	select {
	case f := <-fails:
		t.Fatalf("reported twice: %+v", f)
	default:
	}
	// A new event still visits it: the entry may have been fixed.
	q.Add("dn")
	next(t, fails)
	if calls.Load() != 2 {
		t.Fatalf("%d calls after a new Add", calls.Load())
	}
}

func TestTerminal(t *testing.T) {
	if Terminal(nil) != nil {
		t.Error("Terminal(nil) is not nil")
	}
	if IsTerminal(errors.New("x")) || IsTerminal(nil) {
		t.Error("plain errors are terminal")
	}
	e := Terminal(errors.New("bad dn"))
	if e.Error() != "bad dn" || !IsTerminal(fmt.Errorf("wrapped: %w", e)) {
		t.Errorf("Terminal(bad dn) = %q", e)
	}
}

func TestRunGivesEachItemATimeout(t *testing.T) {
	q, _, fails := runQueue(t, Options[string]{ItemTimeout: 20 * time.Millisecond}, 1,
		func(ctx context.Context, _ string) error {
			if _, ok := ctx.Deadline(); !ok {
				return Terminal(errors.New("no deadline"))
			}
			<-ctx.Done() // a hung libvirt call that honours its context
			return ctx.Err()
		})
	q.Add("dn")
	f := next(t, fails)
	if !errors.Is(f.err, context.DeadlineExceeded) || !f.retry {
		t.Fatalf("failure %+v", f)
	}
}

func TestRunStops(t *testing.T) {
	var reported atomic.Int32
	q := New(Options[string]{Clock: NewFakeClock(t0), OnError: func(string, error, bool) { reported.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		q.Run(ctx, 3, func(ctx context.Context, _ string) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})
		close(stopped)
	}()
	q.Add("dn")
	<-started
	cancel()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if !q.ShuttingDown() || reported.Load() != 0 {
		t.Fatalf("after cancel: shutting down %v, %d errors reported", q.ShuttingDown(), reported.Load())
	}

	// ShutDown from elsewhere stops Run too.
	q2 := New(Options[string]{Clock: NewFakeClock(t0)})
	done := make(chan struct{})
	go func() {
		q2.Run(context.Background(), 2, func(context.Context, string) error { return nil })
		close(done)
	}()
	q2.ShutDown()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after ShutDown")
	}
}
