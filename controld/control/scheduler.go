package control

import (
	"container/heap"
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/workqueue"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// DefaultCatchUpWindow is how late a missed run may still be made up on start
// when the configuration does not say.
const DefaultCatchUpWindow = 6 * time.Hour

// NightlyOptions turns on nightly operation: backups on the schedules the
// directory holds, catch-up of runs missed while controld was down, and
// retention of iterations. Without it the controller only advances leaves
// created by others (the CLI, an operator, tests).
type NightlyOptions struct {
	// Location is the zone the cron fields are read in; default time.Local.
	Location *time.Location
	// CatchUpWindow: on start, a VM whose latest planned run lies at most this
	// far back and has no leaf of that time or later is backed up once. 0: never.
	CatchUpWindow time.Duration
	// Clock drives the schedule; default the wall clock. The controller's
	// stamps use it too unless Options.Now is set.
	Clock workqueue.Clock
	// CreateWorkers is how many leaves are created at once (default 8): adds
	// on one connection overlap their round trips.
	CreateWorkers int
	// RetryDelay is the wait before a creation that failed on a transient
	// directory error is tried again for the same planned time (default 30s).
	RetryDelay time.Duration
	// OnPlan is told whenever a VM's plan changes. It runs under the
	// scheduler's lock and must not call back into the controller.
	OnPlan func(Plan)
	// OnFire is told what each firing did, after it is done.
	OnFire func(Fired)
}

// Fired reports one firing of the scheduler.
type Fired struct {
	At       time.Time
	Created  []string // DNs of new leaves
	Existing []string // DNs of leaves that existed already (a harmless second attempt)
	Skipped  []string // VMs skipped because an earlier leaf is still active
	Failed   []string // VMs whose leaf could not be created
}

// NightlyStats counts what nightly operation did since the controller started.
type NightlyStats struct {
	Created, Existing, SkippedBusy, Failed, CaughtUp, RetentionDeletes uint64
}

// Scheduler holds every VM's plan and next run, fed by the controller's
// watch, and creates the leaves when they fall due: all VMs due at one time
// get the same leaf name, so the VMs of one host form one batch.
type Scheduler struct {
	o       NightlyOptions
	log     logrus.FieldLogger
	store   *ldapschema.Store
	leaves  leafIndex       // what the controller's index knows of each VM's leaves
	enqueue func(queueKey)  // hands a batch or a VM's retention to the controller
	onWrite func(fsm.Write) // Options.OnWrite, for the leaves it creates

	mu     sync.Mutex
	view   *view
	plans  map[string]*planState
	queue  planHeap
	synced bool
	holds  map[queueKey]int // batch keys being created; reconcile waits
	wake   chan struct{}
	ready  chan struct{} // closed once the first plans are computed

	created, existing, skipped, failed, caughtUp, deletes atomic.Uint64
}

// planState is a Plan with the scheduler's bookkeeping.
type planState struct {
	Plan
	key      string    // identity of status and schedule: Next survives changes that keep it
	inflight string    // leaf created, not yet seen through the watch
	retry    time.Time // planned time of a creation to try again
	retryAt  time.Time
	hi       int // index in the heap, -1 when not in it
}

// due is when the plan needs the scheduler next; zero for never.
func (p *planState) due() time.Time {
	switch {
	case p.retryAt.IsZero():
		return p.Next
	case p.Next.IsZero() || p.retryAt.Before(p.Next):
		return p.retryAt
	}
	return p.Next
}

// leafIndex is what the scheduler asks of the controller's view of the
// leaves; nothing else of the controller is its business.
type leafIndex interface {
	activeLeaf(vm string) (string, bool)
	hasLeaves(vm string) bool
	hasLeafSince(vm, name string) bool
}

func newScheduler(c *Controller, o NightlyOptions) *Scheduler {
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.Clock == nil {
		o.Clock = workqueue.RealClock{}
	}
	if o.CreateWorkers <= 0 {
		o.CreateWorkers = 8
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 30 * time.Second
	}
	return &Scheduler{
		o: o, log: c.o.Log.WithField("part", "scheduler"),
		store: c.o.Store, leaves: c, onWrite: c.o.OnWrite,
		enqueue: func(k queueKey) { c.queue.Add(k) }, // the queue comes after the scheduler
		view:    newView(c.tree, o.Location), plans: map[string]*planState{},
		holds: map[queueKey]int{}, wake: make(chan struct{}, 1), ready: make(chan struct{}),
	}
}

// run fires due plans until ctx is done.
func (s *Scheduler) run(ctx context.Context) {
	for {
		s.mu.Lock()
		var at time.Time
		if len(s.queue) > 0 {
			at = s.queue[0].due()
		}
		s.mu.Unlock()
		var fire <-chan time.Time
		stop := func() bool { return false }
		if !at.IsZero() {
			fire, stop = s.o.Clock.At(at)
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-s.wake:
			stop()
		case <-fire:
			s.fire(ctx)
		}
	}
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// onEvent updates the view from one watch event. Leaves only matter to clear
// in-flight marks; VM and configuration entries change plans.
func (s *Scheduler) onEvent(ev ldapschema.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev.Kind {
	case ldapschema.EventPut:
		if isLeaf(ev.Entry) {
			s.leafSeenLocked(ev.DN)
			return
		}
		vms, all := s.view.put(ev.Entry)
		s.replanLocked(vms, all)
	case ldapschema.EventDelete:
		vms, all := s.view.remove(ev.DN)
		if len(vms) == 0 && !all {
			s.leafSeenLocked(ev.DN)
		}
		s.replanLocked(vms, all)
	case ldapschema.EventSynced:
		if !s.synced {
			s.synced = true
			s.startLocked()
		}
	}
}

func (s *Scheduler) leafSeenLocked(dn string) {
	vm, name := leafVM(s.store.Tree, dn)
	if p := s.plans[vm]; p != nil && p.inflight == name {
		p.inflight = ""
	}
}

// startLocked computes every plan once the first refresh is complete, and
// makes up runs missed while controld was down.
func (s *Scheduler) startLocked() {
	now := s.o.Clock.Now()
	for _, vm := range s.view.names() {
		s.updateLocked(vm, now, true)
	}
	close(s.ready)
	s.poke()
}

func (s *Scheduler) replanLocked(vms []string, all bool) {
	if !s.synced {
		return // startLocked computes everything at once
	}
	if all {
		vms = s.view.names()
	}
	now := s.o.Clock.Now()
	for _, vm := range vms {
		s.updateLocked(vm, now, false)
	}
	s.poke()
}

func planKey(p Plan) string {
	k := string(p.Status)
	if p.Schedule != nil {
		k += " " + p.Schedule.String()
	}
	if p.Err != nil {
		k += " " + p.Err.Error()
	}
	return k
}

// updateLocked recomputes one VM's plan. Next is kept while status and schedule
// stay the same, so that an unrelated change to the VM at the due moment does
// not lose the run.
func (s *Scheduler) updateLocked(vm string, now time.Time, initial bool) {
	p, ok := s.view.plan(vm)
	old := s.plans[vm]
	if !ok {
		if old != nil {
			s.removeLocked(old)
			delete(s.plans, vm)
		}
		return
	}
	key := planKey(p)
	if old == nil {
		old = &planState{hi: -1}
		s.plans[vm] = old
	}
	changed := initial || old.key != key || old.Host != p.Host || old.Iterations != p.Iterations || old.Source != p.Source
	if old.key == key && !initial {
		p.Next = old.Next
	} else {
		old.retry, old.retryAt = time.Time{}, time.Time{}
		if p.Status == PlanScheduled {
			p.Next = p.Schedule.Next(now)
			if initial {
				s.catchUpLocked(&p, now)
			}
		}
		if p.Status == PlanInvalid {
			s.log.WithField("vm", vm).WithError(p.Err).Warn("VM not backed up on schedule: invalid configuration")
		}
	}
	old.Plan, old.key = p, key
	s.fixLocked(old)
	if changed {
		if s.o.OnPlan != nil {
			s.o.OnPlan(p)
		}
		if !initial && s.leaves.hasLeaves(vm) {
			s.enqueue(retentionKey(vm)) // iterations or exclusion may have changed
		}
	}
}

// catchUpLocked makes the latest run within the window due now if the VM has
// no leaf of that time or later: the directory says whether it ran, nothing
// else is kept.
func (s *Scheduler) catchUpLocked(p *Plan, now time.Time) {
	if s.o.CatchUpWindow <= 0 {
		return
	}
	last, ok := p.Schedule.Last(now.Add(-s.o.CatchUpWindow), now)
	if !ok || s.leaves.hasLeafSince(p.VM, LeafName(last)) {
		return
	}
	if last.Before(now) {
		s.caughtUp.Add(1)
		s.log.WithFields(logrus.Fields{"vm": p.VM, "leaf": LeafName(last)}).Info("making up a run missed while controld was down")
	}
	p.Next = last
}

// fire takes every plan that is due and starts its run.
func (s *Scheduler) fire(ctx context.Context) {
	now := s.o.Clock.Now()
	var due []dueRun
	s.mu.Lock()
	for len(s.queue) > 0 && !s.queue[0].due().After(now) {
		p := s.queue[0]
		var planned time.Time
		if !p.retryAt.IsZero() && !p.retryAt.After(now) {
			planned = p.retry
			p.retry, p.retryAt = time.Time{}, time.Time{}
		}
		if !p.Next.IsZero() && !p.Next.After(now) {
			// Late (a stalled process, a stepped clock): run once, for the latest.
			planned = p.Next
			for n := p.Schedule.Next(planned); !n.IsZero() && !n.After(now); n = p.Schedule.Next(n) {
				planned = n
			}
			p.Next = p.Schedule.Next(planned)
		}
		s.fixLocked(p)
		if p.hi >= 0 && !p.due().After(now) {
			s.removeLocked(p) // cannot happen; never spin on it
		}
		if !planned.IsZero() {
			due = append(due, dueRun{vm: p.VM, host: p.Host, planned: planned})
		}
	}
	s.mu.Unlock()
	if len(due) > 0 {
		s.start(ctx, due, now)
	}
}

// plan returns the VM's current plan.
func (s *Scheduler) plan(vm string) (Plan, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.plans[vm]
	if !ok {
		return Plan{}, false
	}
	return p.Plan, true
}

// The heap of plans by due time.

type planHeap []*planState

func (h planHeap) Len() int           { return len(h) }
func (h planHeap) Less(i, j int) bool { return h[i].due().Before(h[j].due()) }
func (h planHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hi, h[j].hi = i, j
}
func (h *planHeap) Push(x any) {
	p := x.(*planState)
	p.hi = len(*h)
	*h = append(*h, p)
}
func (h *planHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.hi = -1
	return p
}

// fixLocked puts p where its due time says, or takes it out.
func (s *Scheduler) fixLocked(p *planState) {
	switch {
	case p.due().IsZero():
		s.removeLocked(p)
	case p.hi < 0:
		heap.Push(&s.queue, p)
	default:
		heap.Fix(&s.queue, p.hi)
	}
}

func (s *Scheduler) removeLocked(p *planState) {
	if p.hi >= 0 {
		heap.Remove(&s.queue, p.hi)
	}
}

// Plan returns a VM's plan as nightly operation sees it now; ok is false for
// an unknown VM or when nightly operation is off.
func (c *Controller) Plan(vm string) (Plan, bool) {
	if c.sched == nil {
		return Plan{}, false
	}
	return c.sched.plan(vm)
}

// WaitPlanned blocks until the scheduler has computed every VM's plan from
// the first complete view of the directory (and made up missed runs), or ctx
// is done. Without nightly operation it waits for that view alone.
func (c *Controller) WaitPlanned(ctx context.Context) error {
	if c.sched == nil {
		return c.cache.WaitSynced(ctx)
	}
	select {
	case <-c.sched.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Plans returns every VM's plan, by VM name.
func (c *Controller) Plans() []Plan {
	if c.sched == nil {
		return nil
	}
	s := c.sched
	s.mu.Lock()
	out := make([]Plan, 0, len(s.plans))
	for _, p := range s.plans {
		out = append(out, p.Plan)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out
}

// NightlyStats returns the counters of nightly operation (zero when off).
func (c *Controller) NightlyStats() NightlyStats {
	if c.sched == nil {
		return NightlyStats{}
	}
	s := c.sched
	return NightlyStats{
		Created: s.created.Load(), Existing: s.existing.Load(), SkippedBusy: s.skipped.Load(),
		Failed: s.failed.Load(), CaughtUp: s.caughtUp.Load(), RetentionDeletes: s.deletes.Load(),
	}
}
