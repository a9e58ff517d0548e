package control

import (
	"context"
	"errors"
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
		w   fsm.Write
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
				w, err := fsm.Transition(fsm.Control, fsm.Leaf{Key: s.store.Tree.Leaf(d.vm, name), VM: d.vm, Name: name, Host: d.host}, fsm.Initialize, stamp)
				if err == nil {
					w.Reason = "scheduled"
					err = s.store.Write(w, nil, nil)
				}
				results <- result{d, w, err}
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
			fired.Created = append(fired.Created, r.w.Key)
			log.Debug("scheduled backup leaf created")
			if s.onWrite != nil {
				s.onWrite(r.w)
			}
		case errors.Is(r.err, ldapschema.ErrConflict):
			// Same planned time, same name: made before (a restart, a retry).
			s.existing.Add(1)
			fired.Existing = append(fired.Existing, r.w.Key)
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
		s.enqueue(k)
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
	return s.leaves.activeLeaf(vm)
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
