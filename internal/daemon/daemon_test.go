package daemon

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/stoneycloud/stoney-conductor/internal/metrics"
	"github.com/stoneycloud/stoney-conductor/internal/workqueue"
)

// waitFor polls cond: for what only a worker goroutine can make true.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not in 5s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// reconcileErrors reads stoney_reconcile_errors_total by kind.
func reconcileErrors(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "stoney_reconcile_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["daemon"] != "nodebackupd" {
				t.Errorf("daemon label %q", labels["daemon"])
			}
			out[labels["kind"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

// A panic in reconcile is logged with its stack and counted, an error and a
// terminal error are logged and counted, and the single worker goes on.
func TestReconcileFailuresAreLoggedAndCounted(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	reg := prometheus.NewRegistry()
	m := metrics.NewNode(reg)
	clock := workqueue.NewFakeClock(time.Date(2012, 10, 2, 1, 0, 0, 0, time.UTC))
	var calls atomic.Int32
	r := New(Options[string]{
		Log: log, Workers: 1, OnReconcileError: m.ReconcileError,
		Queue: workqueue.Options[string]{Clock: clock, BaseDelay: time.Second, MaxDelay: time.Minute},
		Reconcile: func(_ context.Context, key string) error {
			switch calls.Add(1) {
			case 1:
				var seen map[string]int
				seen[key]++ // a nil map: the kind of bug that must not kill the daemon
			case 2:
				return errors.New("directory busy")
			case 3:
				return workqueue.Terminal(errors.New("malformed leaf"))
			}
			return nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { r.work(ctx); close(stopped) }()
	defer func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Error("workers did not stop")
		}
	}()

	r.Queue().Add("ou=leaf")
	waitFor(t, "panic recovered and requeued", func() bool { return calls.Load() == 1 && clock.Waiters() == 1 })
	clock.Step(time.Second)
	waitFor(t, "error requeued", func() bool { return calls.Load() == 2 && clock.Waiters() == 1 })
	clock.Step(2 * time.Second)
	waitFor(t, "terminal error counted", func() bool { return reconcileErrors(t, reg)["terminal"] == 1 })
	if calls.Load() != 3 || clock.Waiters() != 0 {
		t.Fatalf("terminal error retried: %d calls, %d timers", calls.Load(), clock.Waiters())
	}
	r.Queue().Add("ou=leaf")
	waitFor(t, "the worker still working", func() bool { return calls.Load() == 4 })

	if got := reconcileErrors(t, reg); got["panic"] != 1 || got["error"] != 1 || got["terminal"] != 1 {
		t.Errorf("counted %v, want one of each", got)
	}
	var panics, errs, terminals int
	for _, e := range hook.AllEntries() {
		if e.Data["key"] != "ou=leaf" || e.Data[logrus.ErrorKey] == nil {
			t.Errorf("log entry without key or error: %s %v", e.Message, e.Data)
		}
		switch {
		case e.Level == logrus.ErrorLevel && strings.Contains(e.Message, "panicked"):
			panics++
			if st, _ := e.Data["stack"].(string); !strings.Contains(st, "daemon_test.go") {
				t.Errorf("panic logged without its stack: %q", st)
			}
		case e.Level == logrus.WarnLevel && strings.Contains(e.Message, "retrying"):
			errs++
		case e.Level == logrus.ErrorLevel && strings.Contains(e.Message, "not retried"):
			terminals++
		}
	}
	if panics != 1 || errs != 1 || terminals != 1 || len(hook.AllEntries()) != 3 {
		t.Errorf("logged %d panics, %d errors, %d terminal errors in %d entries", panics, errs, terminals, len(hook.AllEntries()))
	}
}
