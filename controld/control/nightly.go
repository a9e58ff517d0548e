package control

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// dueRun is one VM's run that fell due.
type dueRun struct {
	vm, host string
	planned  time.Time
}

// start creates the leaves of the runs that fell due at now. A VM with an
// active leaf is skipped, never queued: the next night tries again. The
// batches stay held until every leaf of this firing exists, so each host's
// batch is complete before the first snapshot is asked for.
func (s *Scheduler) start(ctx context.Context, due []dueRun, now time.Time) {
	stamp := fsm.FormatTime(now)
	fired := Fired{At: now}
	var todo []dueRun
	s.mu.Lock()
	for _, d := range due {
		name := LeafName(d.planned)
		if active, busy := s.busyLocked(d.vm); busy {
			s.skipped.Add(1)
			fired.Skipped = append(fired.Skipped, d.vm)
			s.log.WithFields(logrus.Fields{"vm": d.vm, "leaf": name, "active": active}).
				Warn("backup skipped tonight: the previous one is still active")
			continue
		}
		if p := s.plans[d.vm]; p != nil {
			p.inflight = name
		}
		todo = append(todo, d)
	}
	keys := map[queueKey]bool{}
	for _, d := range todo {
		keys[batchKey(d.host, LeafName(d.planned))] = true
	}
	for k := range keys {
		s.holds[k]++
	}
	s.mu.Unlock()

	type result struct {
		d   dueRun
		dn  string
		err error
	}
	jobs := make(chan dueRun)
	results := make(chan result)
	var wg sync.WaitGroup
	for i := 0; i < s.o.CreateWorkers && i < len(todo); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range jobs {
				name := LeafName(d.planned)
				err := createLeaf(s.c.o.Store, d.vm, name, stamp)
				results <- result{d, s.c.tree.Leaf(d.vm, name), err}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for _, d := range todo {
			select {
			case jobs <- d:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()

	var retry []dueRun
	for r := range results {
		name := LeafName(r.d.planned)
		log := s.log.WithFields(logrus.Fields{"vm": r.d.vm, "leaf": name, "node": r.d.host})
		switch {
		case r.err == nil:
			s.created.Add(1)
			fired.Created = append(fired.Created, r.dn)
			log.Debug("scheduled backup leaf created")
			if s.c.o.OnWrite != nil {
				s.c.o.OnWrite(fsm.Write{Key: r.dn, From: fsm.Absent, To: fsm.Initialize, State: stamp,
					ReturnValue: new(int), Reason: "scheduled"})
			}
		case errors.Is(r.err, ldapschema.ErrConflict):
			// Same planned time, same name: made before (a restart, a retry).
			s.existing.Add(1)
			fired.Existing = append(fired.Existing, r.dn)
			s.clearInflight(r.d.vm, name)
		default:
			s.failed.Add(1)
			fired.Failed = append(fired.Failed, r.d.vm)
			s.clearInflight(r.d.vm, name)
			if errors.Is(r.err, ldapschema.ErrUnavailable) {
				retry = append(retry, r.d)
				log.WithError(r.err).Warn("backup leaf not created; trying again")
			} else {
				log.WithError(r.err).Error("backup leaf not created")
			}
		}
	}

	s.mu.Lock()
	for k := range keys {
		if s.holds[k]--; s.holds[k] <= 0 {
			delete(s.holds, k)
		}
	}
	for _, d := range retry {
		if p := s.plans[d.vm]; p != nil && p.Status == PlanScheduled {
			p.retry, p.retryAt = d.planned, now.Add(s.o.RetryDelay)
			s.fixLocked(p)
		}
	}
	s.mu.Unlock()
	if len(retry) > 0 {
		s.poke()
	}
	for k := range keys {
		s.c.queue.Add(k)
	}
	sort.Strings(fired.Created)
	if s.o.OnFire != nil {
		s.o.OnFire(fired)
	}
}

// busyLocked reports a leaf of vm that blocks a new backup: one created and
// not yet seen, or one fsm.Busy holds. A failed backup is finished, so it
// never blocks the next night.
func (s *Scheduler) busyLocked(vm string) (string, bool) {
	if p := s.plans[vm]; p != nil && p.inflight != "" {
		return p.inflight, true
	}
	return s.c.activeLeaf(vm)
}

func (s *Scheduler) clearInflight(vm, name string) {
	s.mu.Lock()
	if p := s.plans[vm]; p != nil && p.inflight == name {
		p.inflight = ""
	}
	s.mu.Unlock()
}

// held reports whether the scheduler is still creating the batch's leaves.
func (s *Scheduler) held(key queueKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.holds[key] > 0
}

// createLeaf adds the leaf in mode initialize, as the seed's Step 01: one add
// when the VM's ou=backup exists (every night but the first), else the
// container first.
func createLeaf(store *ldapschema.Store, vm, name, stamp string) error {
	req := ldapschema.NewLeafAddRequest(store.Tree, vm, name, string(fsm.Initialize), stamp)
	err := store.Add(req)
	if errors.Is(err, ldapschema.ErrNotFound) {
		if err := EnsureBackupEntry(store, vm); err != nil {
			return fmt.Errorf("%s: %w", vm, err)
		}
		err = store.Add(req)
	}
	return err
}

// activeLeaf returns the name of a leaf of vm that blocks a new backup.
func (c *Controller) activeLeaf(vm string) (string, bool) {
	for _, ref := range c.idx.leafRefs(vm) {
		if e, ok := c.cache.Get(ref.dn); ok && fsm.BusyValue(e.GetAttributeValue(ldapschema.AttrMode)) {
			return ref.name, true
		}
	}
	return "", false
}

// leafRefs returns the leaves of vm the index holds.
func (x *index) leafRefs(vm string) []leafRef {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]leafRef, 0, len(x.vmLeafs[vm]))
	for n := range x.vmLeafs[vm] {
		out = append(out, x.leaves[n])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// hasLeafSince reports whether vm has a leaf named name or later.
func (x *index) hasLeafSince(vm, name string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	for n := range x.vmLeafs[vm] {
		if x.leaves[n].name >= name {
			return true
		}
	}
	return false
}

func (x *index) hasLeaves(vm string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.vmLeafs[vm]) > 0
}

// vmsWithLeaves lists the VMs that have leaves.
func (x *index) vmsWithLeaves() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]string, 0, len(x.vmLeafs))
	for vm := range x.vmLeafs {
		out = append(out, vm)
	}
	return out
}

// hostKeys returns the batch keys of one host.
func (x *index) hostKeys(host string) []queueKey {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []queueKey
	for k := range x.batches {
		if k.host == host {
			out = append(out, k)
		}
	}
	return out
}

// afterEvent is the nightly side of the controller's event handling: plans,
// the per-host cap and retention follow the watch. keys are the batches the
// event touched.
func (c *Controller) afterEvent(ev ldapschema.Event, keys []queueKey) {
	if c.limit != nil {
		c.limit.onEvent(c, ev, keys)
	}
	if c.sched == nil {
		return
	}
	c.sched.onEvent(ev)
	switch ev.Kind {
	case ldapschema.EventPut:
		if isLeaf(ev.Entry) && ev.Entry.GetAttributeValue(ldapschema.AttrMode) == string(fsm.Finished) {
			if vm, _ := leafVM(c.tree, ev.DN); vm != "" {
				c.queue.Add(retentionKey(vm))
			}
		}
	case ldapschema.EventSynced:
		for _, vm := range c.idx.vmsWithLeaves() {
			c.queue.Add(retentionKey(vm))
		}
	}
}
