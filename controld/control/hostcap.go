package control

import (
	"sync"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// hostLimit caps how many leaves of one host hold a slot at once
// (fsm.HoldsSlot; Options.MaxConcurrentPerHost). fsm.Reconcile decides who
// gets the free slots; this counts them across the host's batches, and
// remembers the snapshot requests written that the watch has not shown yet,
// so that two batches reconciled one after the other do not both take the
// last slot.
type hostLimit struct {
	max int

	mu    sync.Mutex
	locks map[string]*sync.Mutex
	// sent holds, per host, leaves (normalized DN) we asked to snapshot that
	// the cache still shows initialized: they hold a slot already.
	sent map[string]map[string]bool
}

func newHostLimit(max int) *hostLimit {
	return &hostLimit{max: max, locks: map[string]*sync.Mutex{}, sent: map[string]map[string]bool{}}
}

// lock serializes admission per host, so two batches of one host reconciled
// at once cannot both take the last slot.
func (l *hostLimit) lock(host string) func() {
	l.mu.Lock()
	m := l.locks[host]
	if m == nil {
		m = &sync.Mutex{}
		l.locks[host] = m
	}
	l.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// free returns how many more of host's leaves may start a snapshot
// (fsm.Facts.Slots), and forgets the requests the cache shows by now. Call
// it with lock(host) held.
func (l *hostLimit) free(c *Controller, host string) int {
	l.mu.Lock()
	sent := l.sent[host]
	l.mu.Unlock()
	kept := map[string]bool{}
	active := 0
	for _, key := range c.idx.hostKeys(host) {
		for _, dn := range c.idx.members(key) {
			e, ok := c.cache.Get(dn)
			if !ok {
				continue
			}
			m := fsm.Mode(e.GetAttributeValue(ldapschema.AttrMode))
			n := ldapschema.NormalizeDN(dn)
			switch {
			case sent[n] && m == fsm.Initialized:
				kept[n] = true
				active++
			case fsm.HoldsSlot(m):
				active++
			}
		}
	}
	l.mu.Lock()
	l.sent[host] = kept
	l.mu.Unlock()
	if active >= l.max {
		return 0
	}
	return l.max - active
}

// expect shows lf as the snapshot request controld wrote for it when the
// cache still lags behind that write, so that fsm sees what the directory
// holds. Call it after free, with lock(host) held.
func (l *hostLimit) expect(host string, lf *fsm.Leaf) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lf.Mode == fsm.Initialized && l.sent[host][ldapschema.NormalizeDN(lf.Key)] {
		lf.Mode, lf.State = fsm.Snapshot, fsm.Pending
	}
}

// admitted records a snapshot request written for dn. Call it with lock(host) held.
func (l *hostLimit) admitted(host, dn string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sent[host] == nil {
		l.sent[host] = map[string]bool{}
	}
	l.sent[host][ldapschema.NormalizeDN(dn)] = true
}

// onEvent re-queues every batch of a host when one of its leaves may have
// freed a slot (finished, or gone), so waiting leaves are admitted.
func (l *hostLimit) onEvent(c *Controller, ev ldapschema.Event, keys []queueKey) {
	switch ev.Kind {
	case ldapschema.EventPut:
		if !isLeaf(ev.Entry) || ev.Entry.GetAttributeValue(ldapschema.AttrMode) != string(fsm.Finished) {
			return
		}
	case ldapschema.EventDelete:
	default:
		return
	}
	hosts := map[string]bool{}
	for _, k := range keys {
		hosts[k.host] = true
	}
	for h := range hosts {
		for _, k := range c.idx.hostKeys(h) {
			c.queue.Add(k)
		}
	}
}
