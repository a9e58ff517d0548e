package recovery

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

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

// Plan is the validation's result: what was found, per VM.
type Plan struct {
	Roots      []ScannedRoot `json:"roots"`
	VMs        []*VMPlan     `json:"vms"`
	Strays     []Stray       `json:"strays,omitempty"`
	Containers []string      `json:"containers,omitempty"` // created before the first VM
	Blockers   []Blocker     `json:"blockers,omitempty"`   // in the way of every VM
}

// Broken returns every broken iteration, of all VMs.
func (p *Plan) Broken() []*Iteration {
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
func (p *Plan) Ready() []*VMPlan {
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

// Validate compares what the scan found with the directory and
// works out, per VM, what an import would create and what stands in its
// way. It changes nothing.
func Validate(store *ldapschema.Store, scan *ScanReport, o ValidateOptions) (*Plan, error) {
	cat, err := readCatalog(store)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Roots: scan.Roots, Strays: scan.Strays}
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
func (c *catalog) planVM(p *VMPlan, o ValidateOptions) error {
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
		saved, err := rebase(c.tree, p.VM, source.ldif)
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
		vm, disks = savedVM(c.tree, p.saved)
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
	case ldapschema.HasBackupClass(savedEntry(p.saved, c.tree.VMBackup(p.VM))):
		p.BackupEntry = BackupEntryFromLDIF
		vmCfg = savedEntry(p.saved, c.tree.VMBackup(p.VM))
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
	pools := imagePools(disks)
	if len(pools) == 0 && vm.Pool != "" {
		pools[vm.Pool] = true
	}
	for _, it := range p.New() {
		var why []string
		if !sameDir(it.Root, cfg.RootDir) {
			why = append(why, fmt.Sprintf("backup root %s, the configuration says %s", it.Root, cfg.RootDir))
		}
		if it.Kind != vm.StorageKind() {
			why = append(why, fmt.Sprintf("%s, the VM's type asks for %s", it.Kind, vm.StorageKind()))
		}
		if !pools[it.StoragePool] {
			why = append(why, fmt.Sprintf("storage pool %s, the VM's disks are in %s", it.StoragePool, strings.Join(sorted(pools), ", ")))
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

func sameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

func sorted(m map[string]bool) []string {
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
