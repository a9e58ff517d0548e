package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Recovery rebuilds the backup recoverCatalog from the backup storage, in the way
// of `lxd recover`: ScanBackups reads the files, ValidateRecovery compares
// them with the directory and changes nothing, ImportRecovered re-creates
// the missing entries, all or nothing per VM.

// BlockerKind names what stands in the way of importing a VM's backups.
type BlockerKind string

// The kinds of blockers.
const (
	// BlockVMMissing: the VM has no entry and re-creating it from its saved
	// LDIF was not agreed to.
	BlockVMMissing BlockerKind = "vm-entry-missing"
	// BlockNoConfig: no backup configuration reaches the VM (VM, pool, global).
	BlockNoConfig BlockerKind = "no-backup-config"
	// BlockBadConfig: the configuration that applies cannot be read.
	BlockBadConfig BlockerKind = "bad-backup-config"
	// BlockLocation: the configuration puts the VM's backups elsewhere than
	// where these were found, so a restore would not find the files.
	BlockLocation BlockerKind = "location"
	// BlockDirectory: the directory itself lacks what the import needs.
	BlockDirectory BlockerKind = "directory"
)

// Blocker is one missing dependency, to be fixed before a retry.
type Blocker struct {
	Kind    BlockerKind `json:"kind"`
	Message string      `json:"message"`
}

// What happens to a VM's entry and to its ou=backup entry.
const (
	EntryExists   = "exists"
	EntryMissing  = "missing"
	EntryRecreate = "recreate" // from the saved LDIF

	BackupEntryExists    = "exists"
	BackupEntryFromLDIF  = "from-ldif" // with the VM's saved backup configuration
	BackupEntryContainer = "container" // a plain ou=backup; the config comes from pool or global
)

// VMPlan is what recovery found and would do for one VM.
type VMPlan struct {
	VM          string       `json:"vm"`
	Entry       string       `json:"entry"`
	LDIFLeaf    string       `json:"ldifLeaf,omitempty"` // whose saved LDIF a re-creation uses
	Node        string       `json:"node,omitempty"`
	VMPool      string       `json:"vmPool,omitempty"`
	Disks       []string     `json:"disks,omitempty"` // targets of the VM's disks
	BackupEntry string       `json:"backupEntry,omitempty"`
	Config      string       `json:"config,omitempty"` // DN of the configuration that applies
	Iterations  []*Iteration `json:"iterations"`
	Blockers    []Blocker    `json:"blockers,omitempty"`
	Notes       []string     `json:"notes,omitempty"`

	saved []*ldap.Entry // the saved subtree, rebased onto this directory
}

// New returns the iterations the import would create leaves for.
func (p *VMPlan) New() []*Iteration {
	var out []*Iteration
	for _, it := range p.Iterations {
		if it.Status == StatusNew {
			out = append(out, it)
		}
	}
	return out
}

// Count returns how many of the VM's iterations have status s.
func (p *VMPlan) Count(s IterationStatus) int {
	n := 0
	for _, it := range p.Iterations {
		if it.Status == s {
			n++
		}
	}
	return n
}

// Ready reports whether the VM has something to import and nothing in the way.
func (p *VMPlan) Ready() bool { return len(p.Blockers) == 0 && len(p.New()) > 0 }

// Blocked reports whether kind stands in the VM's way.
func (p *VMPlan) Blocked(kind BlockerKind) bool {
	for _, b := range p.Blockers {
		if b.Kind == kind {
			return true
		}
	}
	return false
}

func (p *VMPlan) block(kind BlockerKind, format string, a ...any) {
	p.Blockers = append(p.Blockers, Blocker{Kind: kind, Message: fmt.Sprintf(format, a...)})
}

// RecoverPlan is the validation's result: what was found, per VM.
type RecoverPlan struct {
	Roots      []ScannedRoot `json:"roots"`
	VMs        []*VMPlan     `json:"vms"`
	Strays     []Stray       `json:"strays,omitempty"`
	Containers []string      `json:"containers,omitempty"` // created before the first VM
	Blockers   []Blocker     `json:"blockers,omitempty"`   // in the way of every VM
}

// Broken returns every broken iteration, of all VMs.
func (p *RecoverPlan) Broken() []*Iteration {
	var out []*Iteration
	for _, v := range p.VMs {
		for _, it := range v.Iterations {
			if it.Status == StatusBroken {
				out = append(out, it)
			}
		}
	}
	return out
}

// Ready returns the VMs the import would work on.
func (p *RecoverPlan) Ready() []*VMPlan {
	if len(p.Blockers) > 0 {
		return nil
	}
	var out []*VMPlan
	for _, v := range p.VMs {
		if v.Ready() {
			out = append(out, v)
		}
	}
	return out
}

// ValidateOptions say what the operator allows.
type ValidateOptions struct {
	// Recreate says whether a VM whose entry is missing may be re-created
	// from its saved LDIF; nil allows none.
	Recreate func(vm string) bool
}

// recoverCatalog is what the directory holds that recovery compares with, read once.
type recoverCatalog struct {
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

func readRecoverCatalog(store *ldapschema.Store) (*recoverCatalog, error) {
	c := &recoverCatalog{
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
func (c *recoverCatalog) get(dn string) (*ldap.Entry, error) {
	e, err := c.store.Get(dn, "*")
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (c *recoverCatalog) optional(cache map[string]*ldap.Entry, key, dn string) (*ldap.Entry, error) {
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

func (c *recoverCatalog) poolBackup(pool string) (*ldap.Entry, error) {
	if pool == "" {
		return nil, nil
	}
	return c.optional(c.pools, pool, c.tree.PoolBackup(pool))
}

func (c *recoverCatalog) vmBackup(vm string) (*ldap.Entry, error) {
	return c.optional(c.backups, vm, c.tree.VMBackup(vm))
}

func (c *recoverCatalog) vmDisks(vm string) ([]ldapschema.Disk, error) {
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

// classify sets the status of every complete iteration from the leaves.
func (c *recoverCatalog) classify(its []*Iteration) {
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
		case Restorable(l):
			it.Status = StatusKnown
		default:
			it.Status = StatusKnownDifferent
		}
	}
}

// ValidateRecovery compares what the scan found with the directory and
// works out, per VM, what an import would create and what stands in its
// way. It changes nothing.
func ValidateRecovery(store *ldapschema.Store, scan *ScanReport, o ValidateOptions) (*RecoverPlan, error) {
	cat, err := readRecoverCatalog(store)
	if err != nil {
		return nil, err
	}
	plan := &RecoverPlan{Roots: scan.Roots, Strays: scan.Strays}
	if len(cat.missing) > 0 && cat.missing[0] == cat.tree.Base {
		plan.Blockers = append(plan.Blockers, Blocker{Kind: BlockDirectory,
			Message: fmt.Sprintf("the base entry %s does not exist: create it first", cat.tree.Base)})
	} else {
		plan.Containers = cat.missing
	}
	cat.classify(scan.Iterations)
	byVM := map[string]*VMPlan{}
	for _, it := range scan.Iterations {
		p := byVM[it.VM]
		if p == nil {
			p = &VMPlan{VM: it.VM}
			byVM[it.VM] = p
			plan.VMs = append(plan.VMs, p)
		}
		p.Iterations = append(p.Iterations, it)
	}
	sort.Slice(plan.VMs, func(i, j int) bool { return plan.VMs[i].VM < plan.VMs[j].VM })
	for _, p := range plan.VMs {
		if err := cat.planVM(p, o); err != nil {
			return nil, fmt.Errorf("%s: %w", p.VM, err)
		}
	}
	return plan, nil
}

// planVM fills in what the import of p would do and what is in its way.
func (c *recoverCatalog) planVM(p *VMPlan, o ValidateOptions) error {
	p.Entry = EntryExists
	if c.vms[p.VM] == nil {
		p.Entry = EntryMissing
	}
	// The newest complete iteration's LDIF describes the VM best.
	var source *Iteration
	for i := len(p.Iterations) - 1; i >= 0; i-- {
		it := p.Iterations[i]
		if it.ldif != nil && (source == nil || source.Broken() && !it.Broken()) {
			source = it
			if !it.Broken() {
				break
			}
		}
	}
	if source != nil {
		saved, err := recoverRebase(c.tree, p.VM, source.ldif)
		if err != nil {
			return err
		}
		p.saved, p.LDIFLeaf = saved, source.Leaf
	}
	if len(p.New()) == 0 {
		return nil // nothing to import: no need to look further
	}

	var vm ldapschema.VM
	var disks []ldapschema.Disk
	switch {
	case p.Entry == EntryExists:
		v, err := ldapschema.ParseVM(c.tree, c.vms[p.VM])
		if err != nil {
			return err
		}
		vm = v
		if disks, err = c.vmDisks(p.VM); err != nil {
			return err
		}
	case p.saved == nil:
		p.block(BlockVMMissing, "VM %s has no entry in the directory and no backup holds a readable LDIF to re-create it from", p.VM)
		return nil
	default:
		vm, disks = recoverSavedVM(c.tree, p.saved)
		if o.Recreate != nil && o.Recreate(p.VM) {
			p.Entry = EntryRecreate
		} else {
			p.block(BlockVMMissing, "VM %s has no entry in the directory: re-create it and its disks from the LDIF saved with %s", p.VM, p.LDIFLeaf)
		}
	}
	p.Node, p.VMPool = vm.Node, vm.Pool
	for _, d := range disks {
		if d.IsDisk() {
			p.Disks = append(p.Disks, d.Target)
		}
	}
	if others := c.nodes[vm.Node]; len(others) == 0 || len(others) == 1 && others[p.VM] {
		p.Notes = append(p.Notes, fmt.Sprintf("no other VM in the directory runs on node %q: a node daemon must serve %s to restore, or change sstNode first", vm.Node, vm.Node))
	}

	// The VM's own configuration: its ou=backup entry, or the saved one.
	var vmCfg *ldap.Entry
	if p.Entry == EntryExists {
		e, err := c.vmBackup(p.VM)
		if err != nil {
			return err
		}
		vmCfg = e
	}
	switch {
	case vmCfg != nil:
		p.BackupEntry = BackupEntryExists
	case ldapschema.HasBackupClass(recoverSavedEntry(p.saved, c.tree.VMBackup(p.VM))):
		p.BackupEntry = BackupEntryFromLDIF
		vmCfg = recoverSavedEntry(p.saved, c.tree.VMBackup(p.VM))
	default:
		p.BackupEntry = BackupEntryContainer
	}
	poolCfg, err := c.poolBackup(vm.Pool)
	if err != nil {
		return err
	}
	cfg, source2, err := ldapschema.EffectiveConfig(vmCfg, poolCfg, c.global)
	switch {
	case errors.Is(err, ldapschema.ErrNoConfig):
		where := c.tree.GlobalBackup()
		if vm.Pool != "" {
			where = c.tree.PoolBackup(vm.Pool) + " or " + where
		}
		p.block(BlockNoConfig, "no backup configuration reaches VM %s: add %s to %s or %s", p.VM, ldapschema.ClassBackup, c.tree.VMBackup(p.VM), where)
		return nil
	case err != nil:
		p.block(BlockBadConfig, "the backup configuration of VM %s cannot be read: %v", p.VM, err)
		return nil
	}
	p.Config = source2
	if p.BackupEntry == BackupEntryFromLDIF {
		p.Config += " (from the LDIF saved with " + p.LDIFLeaf + ")"
	}

	// A restore looks for the files where the node's layout puts them.
	pools := map[string]bool{}
	for _, d := range disks {
		if !d.IsDisk() {
			continue
		}
		if sp, err := d.StoragePool(); err == nil {
			pools[sp] = true
		}
	}
	if len(pools) == 0 && vm.Pool != "" {
		pools[vm.Pool] = true
	}
	for _, it := range p.New() {
		var why []string
		if !recoverSameDir(it.Root, cfg.RootDir) {
			why = append(why, fmt.Sprintf("backup root %s, the configuration says %s", it.Root, cfg.RootDir))
		}
		if it.Kind != vm.StorageKind() {
			why = append(why, fmt.Sprintf("%s, the VM's type asks for %s", it.Kind, vm.StorageKind()))
		}
		if !pools[it.StoragePool] {
			why = append(why, fmt.Sprintf("storage pool %s, the VM's disks are in %s", it.StoragePool, strings.Join(recoverSorted(pools), ", ")))
		}
		if len(why) > 0 {
			p.block(BlockLocation, "%s is not where a restore of %s would look for it (%s): fix %s or move the files",
				it.Dir, p.VM, strings.Join(why, "; "), source2)
		}
	}
	good := p.Count(StatusKnown) + len(p.New())
	if good > cfg.Iterations {
		p.Notes = append(p.Notes, fmt.Sprintf("the configuration keeps %d iteration(s): retention will delete the oldest %d of the %d once controld runs",
			cfg.Iterations, good-cfg.Iterations, good))
	}
	return nil
}

func recoverSameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

func recoverSorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return []string{"(none)"}
	}
	return out
}

// operational attributes the server keeps itself and refuses in an add.
var recoverOperational = map[string]bool{
	"entryuuid": true, "entrycsn": true, "entrydn": true, "createtimestamp": true,
	"modifytimestamp": true, "creatorsname": true, "modifiersname": true,
	"structuralobjectclass": true, "subschemasubentry": true, "hassubordinates": true,
	"contextcsn": true, "numsubordinates": true,
}

// recoverRebase copies the saved subtree onto this directory's tree (the LDIF
// may come from a directory with another base), parents first, without
// operational attributes.
func recoverRebase(tree ldapschema.Tree, vm string, saved []*ldap.Entry) ([]*ldap.Entry, error) {
	var out []*ldap.Entry
	for _, e := range saved {
		rel, err := recoverRelativeToVM(e.DN, vm)
		if err != nil {
			return nil, err
		}
		parts := make([]string, 0, len(rel)+1)
		for _, r := range rel {
			var avas []string // spelled as saved (String() would lower-case the types)
			for _, a := range r.Attributes {
				avas = append(avas, a.Type+"="+ldap.EscapeDN(a.Value))
			}
			parts = append(parts, strings.Join(avas, "+"))
		}
		parts = append(parts, tree.VM(vm))
		c := &ldap.Entry{DN: strings.Join(parts, ",")}
		for _, a := range e.Attributes {
			if !recoverOperational[strings.ToLower(a.Name)] {
				c.Attributes = append(c.Attributes, ldap.NewEntryAttribute(a.Name, append([]string(nil), a.Values...)))
			}
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return recoverDepth(out[i].DN) < recoverDepth(out[j].DN) })
	return out, nil
}

func recoverDepth(dn string) int {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return strings.Count(dn, ",")
	}
	return len(parsed.RDNs)
}

func recoverSavedEntry(saved []*ldap.Entry, dn string) *ldap.Entry {
	n := ldapschema.NormalizeDN(dn)
	for _, e := range saved {
		if ldapschema.NormalizeDN(e.DN) == n {
			return e
		}
	}
	return nil
}

// recoverSavedVM reads the VM and its disks from the saved subtree.
func recoverSavedVM(tree ldapschema.Tree, saved []*ldap.Entry) (ldapschema.VM, []ldapschema.Disk) {
	var vm ldapschema.VM
	var disks []ldapschema.Disk
	for _, e := range saved {
		if v, err := ldapschema.ParseVM(tree, e); err == nil {
			vm = v
		} else if d, err := ldapschema.ParseDisk(tree, e); err == nil {
			disks = append(disks, d)
		}
	}
	return vm, disks
}

// ImportResult is what the import did for one VM.
type ImportResult struct {
	VM         string   `json:"vm"`
	Leaves     []string `json:"leaves,omitempty"`  // the leaves now in the directory
	Created    []string `json:"created,omitempty"` // every entry created, in order
	Error      string   `json:"error,omitempty"`
	RolledBack bool     `json:"rolledBack,omitempty"`
}

// RecoveredPrefix starts the execution-time value of a recovered leaf, so an
// operator can tell it from one the daemons made.
const RecoveredPrefix = "recovered: "

// ImportRecovered creates the entries of every ready VM of the plan:
// missing containers first, then per VM its entry and disks from the saved
// LDIF (when agreed), its ou=backup entry and one finished leaf per new
// iteration. A VM whose import fails is rolled back (what was created for
// it is deleted, newest first) and the others go on. It never modifies or
// deletes an entry it did not create.
func ImportRecovered(store *ldapschema.Store, plan *RecoverPlan, now time.Time) ([]ImportResult, error) {
	ready := plan.Ready()
	if len(ready) == 0 {
		return nil, nil
	}
	for _, dn := range plan.Containers {
		req := ldap.NewAddRequest(dn, nil)
		req.Attribute(ldapschema.AttrObjectClass, []string{ldapschema.ClassTop, ldapschema.ClassOrganizationalUnit})
		rdn, _, _ := strings.Cut(dn, ",")
		_, val, _ := strings.Cut(rdn, "=")
		req.Attribute(ldapschema.AttrOU, []string{val})
		if err := store.Add(req); err != nil && !errors.Is(err, ldapschema.ErrConflict) {
			return nil, fmt.Errorf("create %s: %w", dn, err)
		}
	}
	var out []ImportResult
	for _, p := range ready {
		out = append(out, recoverImportVM(store, p, now))
	}
	return out, nil
}

func recoverImportVM(store *ldapschema.Store, p *VMPlan, now time.Time) ImportResult {
	tree := store.Tree
	res := ImportResult{VM: p.VM}
	add := func(req *ldap.AddRequest) error {
		if err := store.Add(req); err != nil {
			if errors.Is(err, ldapschema.ErrConflict) {
				return fmt.Errorf("%s exists already (the directory changed since the validation): %w", req.DN, err)
			}
			if ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) {
				// controld's own account may add leaves and containers only.
				return fmt.Errorf("create %s: %w (bind as the directory's administrator to re-create VMs and configurations)", req.DN, err)
			}
			return fmt.Errorf("create %s: %w", req.DN, err)
		}
		res.Created = append(res.Created, req.DN)
		return nil
	}
	err := func() error {
		backupDN := ldapschema.NormalizeDN(tree.VMBackup(p.VM))
		if p.Entry == EntryRecreate {
			for _, e := range p.saved {
				if ldapschema.NormalizeDN(e.DN) == backupDN {
					continue // added below, with the same rule as for an existing VM
				}
				if err := add(ldapschema.AddRequestOf(e)); err != nil {
					return err
				}
			}
		}
		switch p.BackupEntry {
		case BackupEntryFromLDIF:
			if err := add(ldapschema.AddRequestOf(recoverSavedEntry(p.saved, tree.VMBackup(p.VM)))); err != nil {
				return err
			}
		case BackupEntryContainer:
			req := ldap.NewAddRequest(tree.VMBackup(p.VM), nil)
			req.Attribute(ldapschema.AttrObjectClass, []string{ldapschema.ClassTop, ldapschema.ClassOrganizationalUnit})
			req.Attribute(ldapschema.AttrOU, []string{"backup"})
			if err := add(req); err != nil {
				return err
			}
		}
		stamp := RecoveredPrefix + fsm.FormatTime(now)
		for _, it := range p.New() {
			req := ldapschema.NewLeafAddRequest(tree, p.VM, it.Leaf, string(fsm.Finished), it.Leaf)
			req.Attribute(ldapschema.AttrExecutionTime, []string{stamp, "retainBytes: " + strconv.FormatInt(it.Bytes, 10)})
			if err := add(req); err != nil {
				return err
			}
			res.Leaves = append(res.Leaves, it.Leaf)
		}
		return nil
	}()
	if err == nil {
		return res
	}
	res.Error = err.Error()
	res.Leaves = nil
	var left []string
	for i := len(res.Created) - 1; i >= 0; i-- {
		if derr := store.Delete(res.Created[i]); derr != nil {
			left = append(left, res.Created[i])
		}
	}
	if len(left) > 0 {
		res.Error += "; rolling back failed, still in the directory: " + strings.Join(left, ", ")
	} else {
		res.RolledBack = true
		res.Created = nil
	}
	return res
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
