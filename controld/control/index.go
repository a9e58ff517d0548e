package control

import (
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// index groups leaves into batches: same leaf name, VMs on the same host.
type index struct {
	tree ldapschema.Tree
	mu   sync.Mutex
	// leaf DN (normalized) → its DN, VM and batch key
	leaves  map[string]leafRef
	batches map[queueKey]map[string]string // key → normalized DN → DN
	vmHost  map[string]string              // VM → host
	vmLeafs map[string]map[string]bool     // VM → normalized leaf DNs
}

type leafRef struct {
	dn, vm, name string
	key          queueKey
}

func newIndex(tree ldapschema.Tree) *index {
	return &index{
		tree: tree, leaves: map[string]leafRef{}, batches: map[queueKey]map[string]string{},
		vmHost: map[string]string{}, vmLeafs: map[string]map[string]bool{},
	}
}

// queueKey is what the controller's queue holds: a batch (the leaves named
// name on the VMs of host), or a VM whose retention is to be applied.
type queueKey struct {
	retention  bool
	host, name string // a batch
	vm         string // retention
}

func batchKey(host, name string) queueKey { return queueKey{host: host, name: name} }

func retentionKey(vm string) queueKey { return queueKey{retention: true, vm: vm} }

// String names the key in logs.
func (k queueKey) String() string {
	if k.retention {
		return "retention of " + k.vm
	}
	return "batch " + k.name + " on " + k.host
}

// put records an entry and returns the batch keys to reconcile.
func (x *index) put(e *ldap.Entry) []queueKey {
	x.mu.Lock()
	defer x.mu.Unlock()
	if isLeaf(e) {
		vm, name := leafVM(x.tree, e.DN)
		n := ldapschema.NormalizeDN(e.DN)
		key := batchKey(x.vmHost[vm], name)
		var keys []queueKey
		if old, ok := x.leaves[n]; ok && old.key != key {
			x.unlink(n, old)
			keys = append(keys, old.key)
		}
		x.link(n, leafRef{dn: e.DN, vm: vm, name: name, key: key})
		return append(keys, key)
	}
	vm := e.GetAttributeValue(ldapschema.AttrVirtualMachine)
	host := e.GetAttributeValue(ldapschema.AttrNode)
	if vm == "" || x.vmHost[vm] == host {
		if vm != "" {
			x.vmHost[vm] = host
		}
		return nil
	}
	x.vmHost[vm] = host
	// The VM moved: its leaves change batch.
	var keys []queueKey
	for n := range x.vmLeafs[vm] {
		ref := x.leaves[n]
		x.unlink(n, ref)
		keys = append(keys, ref.key)
		ref.key = batchKey(host, ref.name)
		x.link(n, ref)
		keys = append(keys, ref.key)
	}
	return keys
}

func (x *index) link(n string, ref leafRef) {
	x.leaves[n] = ref
	if x.batches[ref.key] == nil {
		x.batches[ref.key] = map[string]string{}
	}
	x.batches[ref.key][n] = ref.dn
	if x.vmLeafs[ref.vm] == nil {
		x.vmLeafs[ref.vm] = map[string]bool{}
	}
	x.vmLeafs[ref.vm][n] = true
}

func (x *index) unlink(n string, ref leafRef) {
	delete(x.leaves, n)
	if b := x.batches[ref.key]; b != nil {
		delete(b, n)
		if len(b) == 0 {
			delete(x.batches, ref.key)
		}
	}
	if v := x.vmLeafs[ref.vm]; v != nil {
		delete(v, n)
		if len(v) == 0 {
			delete(x.vmLeafs, ref.vm)
		}
	}
}

func (x *index) remove(dn string) []queueKey {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := ldapschema.NormalizeDN(dn)
	if ref, ok := x.leaves[n]; ok {
		x.unlink(n, ref)
		return []queueKey{ref.key}
	}
	return nil
}

func (x *index) members(key queueKey) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Sorted(maps.Values(x.batches[key]))
}

func (x *index) keys() []queueKey {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Collect(maps.Keys(x.batches))
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

func (c *Controller) hasLeaves(vm string) bool { return c.idx.hasLeaves(vm) }

func (c *Controller) hasLeafSince(vm, name string) bool { return c.idx.hasLeafSince(vm, name) }

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
	return slices.Collect(maps.Keys(x.vmLeafs))
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
