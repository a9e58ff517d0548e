package recovery

import (
	"errors"
	"fmt"
	"sort"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// catalog is what the directory holds that recovery compares with, read once.
type catalog struct {
	store   *ldapschema.Store
	tree    ldapschema.Tree
	missing []string                     // containers (Base first) that do not exist
	vms     map[string]*ldap.Entry       // VM entries by name
	leaves  map[string]ldapschema.Leaf   // by vm + "/" + leaf
	nodes   map[string]map[string]bool   // node -> VMs on it
	global  *ldap.Entry                  // nil when absent
	pools   map[string]*ldap.Entry       // pool backup entries read so far (nil: absent)
	backups map[string]*ldap.Entry       // VM ou=backup entries read so far (nil: absent)
	disks   map[string][]ldapschema.Disk // VM disks read so far
}

func readCatalog(store *ldapschema.Store) (*catalog, error) {
	c := &catalog{
		store: store, tree: store.Tree,
		vms: map[string]*ldap.Entry{}, leaves: map[string]ldapschema.Leaf{}, nodes: map[string]map[string]bool{},
		pools: map[string]*ldap.Entry{}, backups: map[string]*ldap.Entry{}, disks: map[string][]ldapschema.Disk{},
	}
	for _, dn := range append([]string{c.tree.Base}, c.tree.Services(), c.tree.Virtualization(), c.tree.VirtualMachines()) {
		if _, err := c.get(dn); errors.Is(err, ldapschema.ErrNotFound) {
			c.missing = append(c.missing, dn)
		} else if err != nil {
			return nil, err
		}
	}
	var err error
	if c.global, err = c.get(c.tree.GlobalBackup()); err != nil && !errors.Is(err, ldapschema.ErrNotFound) {
		return nil, err
	}
	if len(c.missing) > 0 {
		return c, nil // no VMs to read
	}
	es, err := store.Search(c.tree.VirtualMachines(), ldap.ScopeSingleLevel,
		"(objectClass="+ldapschema.ClassVirtualMachine+")", []string{"*"})
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		v, err := ldapschema.ParseVM(c.tree, e)
		if err != nil {
			continue // not one the daemons would work on either
		}
		c.vms[v.Name] = e
		if c.nodes[v.Node] == nil {
			c.nodes[v.Node] = map[string]bool{}
		}
		c.nodes[v.Node][v.Name] = true
	}
	ls, err := store.Search(c.tree.VirtualMachines(), ldap.ScopeWholeSubtree,
		"(objectClass="+ldapschema.ClassProvisioning+")", []string{"*"})
	if err != nil {
		return nil, err
	}
	for _, e := range ls {
		if l, err := ldapschema.ParseLeaf(c.tree, e); err == nil {
			c.leaves[l.VM+"/"+l.Name] = l
		}
	}
	return c, nil
}

// get reads an entry with all user attributes; nil and ErrNotFound when absent.
func (c *catalog) get(dn string) (*ldap.Entry, error) {
	e, err := c.store.Get(dn, "*")
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (c *catalog) optional(cache map[string]*ldap.Entry, key, dn string) (*ldap.Entry, error) {
	if e, ok := cache[key]; ok {
		return e, nil
	}
	e, err := c.get(dn)
	if errors.Is(err, ldapschema.ErrNotFound) {
		e, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	cache[key] = e
	return e, nil
}

func (c *catalog) poolBackup(pool string) (*ldap.Entry, error) {
	if pool == "" {
		return nil, nil
	}
	return c.optional(c.pools, pool, c.tree.PoolBackup(pool))
}

func (c *catalog) vmBackup(vm string) (*ldap.Entry, error) {
	return c.optional(c.backups, vm, c.tree.VMBackup(vm))
}

func (c *catalog) vmDisks(vm string) ([]ldapschema.Disk, error) {
	if d, ok := c.disks[vm]; ok {
		return d, nil
	}
	es, err := c.store.Search(c.tree.VM(vm), ldap.ScopeWholeSubtree, "(objectClass="+ldapschema.ClassDisk+")", []string{"*"})
	if err != nil && !errors.Is(err, ldapschema.ErrNotFound) {
		return nil, err
	}
	var out []ldapschema.Disk
	for _, e := range es {
		if d, err := ldapschema.ParseDisk(c.tree, e); err == nil {
			out = append(out, d)
		}
	}
	c.disks[vm] = out
	return out, nil
}

// imagePools are the storage pools (directories) of the VM's disk images:
// the node files a backup under them.
func imagePools(disks []ldapschema.Disk) map[string]bool {
	pools := map[string]bool{}
	for _, d := range disks {
		if sp, err := d.StoragePool(); err == nil && d.IsDisk() {
			pools[sp] = true
		}
	}
	return pools
}

// classify sets the status of every complete iteration from the leaves.
func (c *catalog) classify(its []*Iteration) {
	first := map[string]*Iteration{} // complete iterations by VM and leaf
	for _, it := range its {
		l, ok := c.leaves[it.VM+"/"+it.Leaf]
		if ok {
			it.Directory = fmt.Sprintf("%s, return value %d", l.Mode, l.ReturnValue)
		}
		if it.Broken() {
			it.Status = StatusBroken
			continue
		}
		if f := first[it.VM+"/"+it.Leaf]; f != nil {
			// One leaf per name: a copy in a second root is not imported twice.
			it.Status = StatusDuplicate
			it.Directory = "a copy of " + f.Dir
			continue
		}
		first[it.VM+"/"+it.Leaf] = it
		switch {
		case !ok:
			it.Status = StatusNew
		case fsm.Restorable(l.FSM("")):
			it.Status = StatusKnown
		default:
			it.Status = StatusKnownDifferent
		}
	}
}

// BackupRoots returns the backup roots the directory's configurations name
// (global, pool and VM level), each with the DN it comes from. A
// configuration that cannot be read is returned as an error and skipped.
func BackupRoots(store *ldapschema.Store) ([]RootSource, []error) {
	es, err := store.Search(store.Tree.Virtualization(), ldap.ScopeWholeSubtree,
		"(objectClass="+ldapschema.ClassBackup+")", []string{"*"})
	if errors.Is(err, ldapschema.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{err}
	}
	var out []RootSource
	var errs []error
	seen := map[string]bool{}
	for _, e := range es {
		c, err := ldapschema.ParseBackupConfig(e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !seen[c.RootDir] {
			seen[c.RootDir] = true
			out = append(out, RootSource{Path: c.RootDir, Source: e.DN})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, errs
}
