package libvirt

import (
	"context"
	"errors"
	"sync"
	"time"

	lv "libvirt.org/go/libvirt"
)

// PauseBound limits a live save: once it has run this long, or made this
// many passes over the guest's memory, the guest is paused and the save
// finishes as a plain save does. Zero values: DefaultPauseBound.
type PauseBound struct {
	Time   time.Duration
	Passes int
	// MaxPause is the longest the guest may be paused for the last pass
	// before the bound (QEMU's downtime limit); zero keeps QEMU's, 300 ms.
	MaxPause time.Duration
}

// DefaultPauseBound holds a guest that dirties its memory faster than it
// can be written for at most a minute of copying.
var DefaultPauseBound = PauseBound{Time: time.Minute}

func (b PauseBound) orDefault() PauseBound {
	if b.Time <= 0 && b.Passes <= 0 {
		return DefaultPauseBound
	}
	return b
}

func (b PauseBound) reached(elapsed time.Duration, passes uint64) bool {
	return (b.Time > 0 && elapsed >= b.Time) || (b.Passes > 0 && passes >= uint64(b.Passes))
}

// maxDowntime is the longest pause QEMU accepts to be told a migration may
// take.
const maxDowntime = 2000 * time.Second

// saveOutcome is how the memory got into the state file.
type saveOutcome struct {
	live    bool // written while the guest ran (an external memory snapshot)
	bounded bool // the bound was reached: the guest was paused to finish
}

// liveSave writes a running domain's memory to stateFile while the guest
// runs and, at the instant the copy is complete, makes each disk's interim
// overlay its running image: one external snapshot of memory and disks, no
// snapshot metadata. The guest is paused only for the last pass and the
// disk switch. The file is a save image like SaveFlags writes, which
// DomainRestoreFlags brings back with the recorded XML; switchDisks then
// moves the disks onto the seed's overlays (see liveswitch.go).
//
// Every pass over the memory appends to the file: once budget bytes are
// written, the guest is paused to finish too, so that the last pass fits.
func (h *Hypervisor) liveSave(ctx context.Context, domain, stateFile string, disks []diskRecord, bound PauseBound, budget uint64) (saveOutcome, error) {
	out := saveOutcome{live: true}
	bound = bound.orDefault()
	var snapXML string
	err := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
		x, err := d.GetXMLDesc(0)
		if err != nil {
			return err
		}
		snapXML, err = liveSnapshotXML(x, stateFile, disks)
		return err
	})
	if err != nil {
		return out, err
	}
	done := make(chan error, 1)
	go func() {
		done <- h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
			_, err := d.CreateSnapshotXML(snapXML, lv.DOMAIN_SNAPSHOT_CREATE_LIVE|lv.DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
			return err
		})
	}()
	start := time.Now()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	polling, limited := true, false
	// giveUp ends the save after a failed call of ours, unless it completed
	// meanwhile (the call then failed for want of a job).
	giveUp := func(err error) (saveOutcome, error) {
		aerr := h.abortJob(domain)
		if derr := <-done; derr != nil {
			return out, errors.Join(err, aerr, derr)
		}
		out.bounded = false
		return out, nil
	}
	for {
		select {
		case err := <-done:
			return out, err
		case <-tick.C:
		}
		if !polling {
			continue
		}
		started, passes, written := false, uint64(0), uint64(0)
		_ = h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
			if st, err := d.GetJobStats(0); err == nil && st.MemIterationSet && st.MemIteration > 0 {
				started, passes, written = true, st.MemIteration, st.DataProcessed
			}
			return nil
		})
		if started && !limited && bound.MaxPause > 0 {
			limited = true
			err := h.op("limit the pause of the live save of "+domain, func() error {
				return h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
					return d.MigrateSetMaxDowntime(uint64(max(bound.MaxPause, time.Millisecond)/time.Millisecond), 0)
				})
			})
			if err != nil {
				return giveUp(err)
			}
		}
		// Not before the copy began, when the job may not take the limit
		// yet. The first pass fits (Snapshot checked the room for one copy), a
		// later one may not.
		if !started || !(bound.reached(time.Since(start), passes) || (passes >= 2 && written >= budget)) {
			continue
		}
		var state lv.DomainState
		err := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
			var err error
			state, _, err = d.GetState()
			return err
		})
		if err != nil {
			continue
		}
		polling = false
		if state != lv.DOMAIN_RUNNING {
			continue // paused already: QEMU is finishing the copy
		}
		// The guest dirties memory faster than it is written (or the file
		// would outgrow its room): let QEMU pause it, so that the copy ends
		// as a plain save's does. (A pause of our own races with the
		// snapshot job: libvirt 9.0 then sometimes fails it.)
		out.bounded = true
		err = h.op("end the live save of "+domain, func() error {
			return h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
				// Any pause is short enough now (QEMU's most): it pauses
				// the guest at the end of this pass and completes.
				return d.MigrateSetMaxDowntime(uint64(maxDowntime/time.Millisecond), 0)
			})
		})
		if err != nil {
			return giveUp(err)
		}
	}
}

// abortJob ends the job libvirt runs on the domain, if any; one that ends
// on its own meanwhile is no error.
func (h *Hypervisor) abortJob(domain string) error {
	err := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
		if active, err := d.IsActive(); err != nil || !active {
			return err
		}
		ji, err := d.GetJobInfo()
		if err != nil || ji.Type == lv.DOMAIN_JOB_NONE {
			return err
		}
		err = h.op("abort the job of "+domain, d.AbortJob)
		if errors.Is(err, lv.ERR_OPERATION_INVALID) {
			return nil // no job any more
		}
		return err
	})
	if errors.Is(err, ErrDomainNotFound) || errors.Is(err, lv.ERR_OPERATION_INVALID) {
		return nil
	}
	return err
}

// eventLoop runs libvirt's default event loop, which must be registered
// before the connections whose events are wanted are opened.
var eventLoop sync.Once

func startEventLoop() {
	eventLoop.Do(func() {
		if err := lv.EventRegisterDefaultImpl(); err != nil {
			return // no events: downtimes are measured by the clock
		}
		go func() {
			for {
				if err := lv.EventRunDefaultImpl(); err != nil {
					time.Sleep(time.Second)
				}
			}
		}()
	})
}

// pauseWatch measures how long a domain's guest was really paused, from
// libvirt's lifecycle events: from the first suspended (or stopped) event
// to the last resumed (or started) one that follows.
type pauseWatch struct {
	h      *Hypervisor
	domain string
	ref    *connRef
	id     int

	mu         sync.Mutex
	start, end time.Time
}

// watchPause starts a pauseWatch; nil when events cannot be had (then the
// caller's own clock measures).
func (h *Hypervisor) watchPause(domain string) *pauseWatch {
	r, err := h.acquire()
	if err != nil {
		return nil
	}
	w := &pauseWatch{h: h, domain: domain, ref: r}
	// For this domain only: libvirt tracks one callback for all domains
	// per connection, and snapshots of other domains run alongside.
	dom, err := r.c.LookupDomainByName(domain)
	if err != nil {
		h.release(r, isConnLost(err))
		return nil
	}
	defer dom.Free()
	w.id, err = r.c.DomainEventLifecycleRegister(dom, func(_ *lv.Connect, d *lv.Domain, ev *lv.DomainEventLifecycle) {
		if name, err := d.GetName(); err != nil || name != domain {
			return
		}
		now := time.Now()
		w.mu.Lock()
		defer w.mu.Unlock()
		switch ev.Event {
		case lv.DOMAIN_EVENT_SUSPENDED, lv.DOMAIN_EVENT_STOPPED:
			if w.start.IsZero() {
				w.start = now
			}
		case lv.DOMAIN_EVENT_RESUMED, lv.DOMAIN_EVENT_STARTED:
			if !w.start.IsZero() {
				w.end = now
			}
		}
	})
	if err != nil {
		h.release(r, isConnLost(err))
		return nil
	}
	return w
}

// measure waits until the events show the guest running again and returns
// how long it was paused; false when they did not show both ends.
func (w *pauseWatch) measure() (time.Duration, bool) {
	if w == nil {
		return 0, false
	}
	// Events arrive a moment after the call that caused them returned, and
	// a restore may send "started" before "resumed".
	deadline := time.Now().Add(2 * time.Second)
	for {
		w.mu.Lock()
		start, end := w.start, w.end
		w.mu.Unlock()
		if !end.IsZero() && time.Since(end) >= 100*time.Millisecond {
			return end.Sub(start), true
		}
		if time.Now().After(deadline) {
			return 0, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// close ends the watch; it may be called more than once.
func (w *pauseWatch) close() {
	if w == nil || w.ref == nil {
		return
	}
	err := w.ref.c.DomainEventDeregister(w.id)
	w.h.release(w.ref, isConnLost(err))
	w.ref = nil
}
