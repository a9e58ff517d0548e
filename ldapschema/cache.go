package ldapschema

import (
	"context"
	"sync"

	"github.com/go-ldap/ldap/v3"
)

// Cache holds the entries a Watch reports, keyed by normalized DN, so that
// reconcilers read the directory as last seen without a round trip. It is fed
// by Apply (usually straight from Watch) and tells its listeners afterwards.
// Safe for concurrent use.
type Cache struct {
	mu        sync.RWMutex
	entries   map[string]*ldap.Entry
	synced    bool
	syncedCh  chan struct{}
	listeners []func(Event)
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{entries: map[string]*ldap.Entry{}, syncedCh: make(chan struct{})}
}

// OnEvent registers fn to be called after each applied event (outside the lock).
// Register before the watch starts.
func (c *Cache) OnEvent(fn func(Event)) {
	c.mu.Lock()
	c.listeners = append(c.listeners, fn)
	c.mu.Unlock()
}

// Apply records ev and tells the listeners.
func (c *Cache) Apply(ev Event) {
	c.mu.Lock()
	switch ev.Kind {
	case EventPut:
		c.entries[NormalizeDN(ev.DN)] = ev.Entry
	case EventDelete:
		delete(c.entries, NormalizeDN(ev.DN))
	case EventSynced:
		if !c.synced {
			c.synced = true
			close(c.syncedCh)
		}
	}
	ls := c.listeners
	c.mu.Unlock()
	for _, fn := range ls {
		fn(ev)
	}
}

// Get returns the entry last seen at dn.
func (c *Cache) Get(dn string) (*ldap.Entry, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.entries[NormalizeDN(dn)]
	return e, ok
}

// Each calls fn for every entry, under a read lock: fn must not call back into c.
func (c *Cache) Each(fn func(*ldap.Entry)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, e := range c.entries {
		fn(e)
	}
}

// Len is the number of entries held.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// WaitSynced blocks until the first refresh is complete or ctx is done.
func (c *Cache) WaitSynced(ctx context.Context) error {
	select {
	case <-c.syncedCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
