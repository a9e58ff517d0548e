package control

import (
	"sync"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// hostLimit caps how many leaves of one host are between snapshot and
// retained at once (Options.MaxConcurrentPerHost). The others wait in
// initialized; the controller asks for their snapshot when a slot frees.
//
// It works around fsm.Reconcile rather than inside it: the initialized leaves
// beyond the cap are left out of the batch handed to Reconcile, so the
// admitted ones are snapshotted together and merged one at a time as the fsm
// decides. Left in, they would hold the batch's merges back for ever (the fsm
// waits for every snapshot of a batch before the first merge).
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

// working reports whether a leaf in mode m holds one of its host's slots.
func working(m fsm.Mode) bool {
	switch m {
	case fsm.Snapshot, fsm.Snapshotting, fsm.Snapshotted,
		fsm.Merge, fsm.Merging, fsm.Merged,
		fsm.Retain, fsm.Retaining, fsm.Retained:
		return true
	}
	return false
}

// admit returns batch without the initialized leaves that would go over the
// cap. Call it with lock(host) held.
func (l *hostLimit) admit(c *Controller, host string, batch []fsm.Leaf) []fsm.Leaf {
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
			if sent[n] && m == fsm.Initialized {
				kept[n] = true
				active++
				continue
			}
			if working(m) {
				active++
			}
		}
	}
	l.mu.Lock()
	l.sent[host] = kept
	l.mu.Unlock()

	free := l.max - active
	out := make([]fsm.Leaf, 0, len(batch))
	for _, lf := range batch {
		if lf.Mode == fsm.Initialized && !kept[ldapschema.NormalizeDN(lf.Key)] {
			if free <= 0 {
				continue
			}
			free--
		}
		out = append(out, lf)
	}
	return out
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
