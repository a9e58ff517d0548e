package workqueue

import (
	"sync"
	"time"
)

// Clock is the queue's source of time.
type Clock interface {
	Now() time.Time
	// At returns a channel that receives once the clock has reached t, and a
	// function that stops it. An absolute time, not a duration, so that a
	// fake clock stepped between reading Now and arming cannot make it late.
	At(t time.Time) (<-chan time.Time, func() bool)
}

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// At arms a time.Timer for t.
func (RealClock) At(t time.Time) (<-chan time.Time, func() bool) {
	tm := time.NewTimer(time.Until(t))
	return tm.C, tm.Stop
}

// FakeClock is a Clock that moves only when told to. Safe for concurrent use.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

// NewFakeClock returns a FakeClock reading now.
func NewFakeClock(now time.Time) *FakeClock { return &FakeClock{now: now} }

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// At fires at once if t is not in the fake future.
func (c *FakeClock) At(t time.Time) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &fakeWaiter{at: t, ch: make(chan time.Time, 1)}
	if !t.After(c.now) {
		w.ch <- c.now
		return w.ch, func() bool { return false }
	}
	c.waiters = append(c.waiters, w)
	return w.ch, func() bool { return c.remove(w) }
}

func (c *FakeClock) remove(w *fakeWaiter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, o := range c.waiters {
		if o == w {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// Step moves the clock forward by d and fires what came due.
func (c *FakeClock) Step(d time.Duration) {
	c.mu.Lock()
	c.setLocked(c.now.Add(d))
	c.mu.Unlock()
}

// Set moves the clock to t and fires what came due.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.setLocked(t)
	c.mu.Unlock()
}

func (c *FakeClock) setLocked(t time.Time) {
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.ch <- t // buffered, fires once
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

// Waiters returns how many armed timers have not fired yet.
func (c *FakeClock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}
