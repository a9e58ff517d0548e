package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// DefaultLimits are how long a leaf may stay in a mode before controld gives up
// on it. The limits count from the leaf's last change (modifyTimestamp): the
// node writes progress while a copy or a merge moves on and falls silent
// when it stalls, so for those steps a limit bounds a stall, not the work.
var DefaultLimits = fsm.Limits{
	fsm.Snapshot: 10 * time.Minute, fsm.Merge: 10 * time.Minute, fsm.Retain: 10 * time.Minute,
	fsm.Delete: 10 * time.Minute, fsm.UnretainSmallFiles: 10 * time.Minute,
	fsm.UnretainLargeFiles: 10 * time.Minute, fsm.Restore: 10 * time.Minute,
	fsm.Snapshotting: 30 * time.Minute, fsm.Merging: 2 * time.Hour, fsm.Retaining: 6 * time.Hour,
	fsm.Deleting: time.Hour, fsm.UnretainingSmallFiles: 30 * time.Minute,
	fsm.UnretainingLargeFiles: 6 * time.Hour, fsm.Restoring: 2 * time.Hour,
}

// TimeoutCode is the return value of a leaf controld gave up on: the original
// has no code for it; the leaf's description says what happened.
const TimeoutCode = ldapschema.RCUndefined

// ErrLeaseLost: another controld took the lease; this one must stop writing.
var ErrLeaseLost = errors.New("controld lease lost to another controld")

// liveness knows which hosts stopped renewing their node lease.
type liveness struct {
	mu   sync.Mutex
	dead map[string]bool
}

func (l *liveness) isDead(host string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dead[host]
}

// set records the dead hosts and returns those that just died.
func (l *liveness) set(dead map[string]bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var fresh []string
	for h := range dead {
		if !l.dead[h] {
			fresh = append(fresh, h)
		}
	}
	l.dead = dead
	return fresh
}

// watchNodes reads the node leases every few seconds; a host whose lease
// expired more than NodeTimeout ago is dead, and its batches are reconciled so
// that its waiting leaves fail instead of waiting for ever. A host that never
// held a lease is not judged (the deadlines still apply).
func (c *Controller) watchNodes(ctx context.Context) {
	every := c.o.NodeTimeout / 4
	if every < 200*time.Millisecond {
		every = 200 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		leases, err := c.o.Store.ReadLeases(c.tree.Nodes())
		if err != nil {
			c.o.Log.WithError(err).Warn("cannot read node leases")
		} else {
			now := c.o.Now()
			dead := map[string]bool{}
			for _, r := range leases {
				host := leaseHost(r.DN)
				if host != "" && now.After(r.Until.Add(c.o.NodeTimeout)) {
					dead[host] = true
				}
			}
			for _, h := range c.alive.set(dead) {
				c.o.Log.WithField("node", h).Warn("node stopped renewing its lease; failing its waiting leaves")
				for _, k := range c.idx.keys() {
					if k.host == h {
						c.queue.Add(k)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func leaseHost(dn string) string {
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) == 0 || len(parsed.RDNs[0].Attributes) != 1 {
		return ""
	}
	return parsed.RDNs[0].Attributes[0].Value
}

// modified is when controld first saw the leaf as it is now (same mode, same
// modifyTimestamp), by controld's own clock: a node's progress writes change
// the entry and so restart the count, and no two clocks are compared. After a
// controld restart the count starts again: a deadline may stretch, never vanish.
func (c *Controller) modified(dn string) time.Time {
	e, ok := c.cache.Get(dn)
	if !ok {
		return c.o.Now()
	}
	sig := e.GetAttributeValue(ldapschema.AttrMode) + "@" + e.GetAttributeValue("modifyTimestamp")
	n := ldapschema.NormalizeDN(dn)
	c.seenMu.Lock()
	defer c.seenMu.Unlock()
	if r, ok := c.seen[n]; ok && r.sig == sig {
		return r.at
	}
	at := c.o.Now()
	c.seen[n] = seenRec{sig: sig, at: at}
	return at
}

type seenRec struct {
	sig string
	at  time.Time
}

func defaultHolder() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%d", strings.ReplaceAll(host, " ", "_"), os.Getpid(), time.Now().UnixNano()%1e6)
}
