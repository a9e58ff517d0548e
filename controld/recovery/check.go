package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// LeafCheck is one leaf whose files were not as they should be, or that was
// not checked.
type LeafCheck struct {
	VM       string   `json:"vm"`
	Leaf     string   `json:"leaf"`
	DN       string   `json:"dn"`
	Dir      string   `json:"dir,omitempty"`
	Problems []string `json:"problems"`
}

// CheckReport is `controld recover --check`: the directory against the
// storage, the other direction of a recovery.
type CheckReport struct {
	Roots   []ScannedRoot `json:"roots"`
	Checked int           `json:"checked"` // finished, successful leaves looked at
	// LeavesWithoutFiles: leaves whose files are gone or incomplete; a
	// restore from them would fail.
	LeavesWithoutFiles []LeafCheck `json:"leavesWithoutFiles"`
	// FilesWithoutLeaf: iterations on the storage no leaf knows (a recovery
	// imports the complete ones).
	FilesWithoutLeaf []*Iteration `json:"filesWithoutLeaf"`
	Strays           []Stray      `json:"strays,omitempty"`
	// Skipped: leaves not checked (still being worked on, failed, no
	// configuration to tell where their files are).
	Skipped []LeafCheck `json:"skipped,omitempty"`
}

// Clean reports whether the check found nothing to act on.
func (r *CheckReport) Clean() bool {
	return len(r.LeavesWithoutFiles) == 0 && len(r.FilesWithoutLeaf) == 0 && len(r.Strays) == 0
}

// Check compares every leaf in the directory with its files and lists
// the files no leaf knows. scan is Scan of the roots; a leaf whose
// files lie below a root that was not scanned is read directly.
func Check(ctx context.Context, store *ldapschema.Store, scan *ScanReport, images ImageChecker) (*CheckReport, error) {
	cat, err := readCatalog(store)
	if err != nil {
		return nil, err
	}
	cat.classify(scan.Iterations)
	r := &CheckReport{Roots: scan.Roots, Strays: scan.Strays,
		LeavesWithoutFiles: []LeafCheck{}, FilesWithoutLeaf: []*Iteration{}}
	byDir := map[string]*Iteration{}
	for _, it := range scan.Iterations {
		byDir[it.Dir] = it
		if _, known := cat.leaves[it.VM+"/"+it.Leaf]; !known {
			r.FilesWithoutLeaf = append(r.FilesWithoutLeaf, it)
		}
	}
	keys := make([]string, 0, len(cat.leaves))
	for k := range cat.leaves {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		l := cat.leaves[k]
		lc := LeafCheck{VM: l.VM, Leaf: l.Name, DN: l.DN}
		if !fsm.Restorable(l.FSM("")) {
			lc.Problems = []string{fmt.Sprintf("not checked: %s with return value %d", l.Mode, l.ReturnValue)}
			r.Skipped = append(r.Skipped, lc)
			continue
		}
		dirs, err := cat.leafDirs(l)
		if err != nil {
			lc.Problems = []string{"not checked: " + err.Error()}
			r.Skipped = append(r.Skipped, lc)
			continue
		}
		r.Checked++
		if problems, dir := checkLeaf(ctx, dirs, byDir, images); len(problems) > 0 {
			lc.Dir, lc.Problems = dir, problems
			r.LeavesWithoutFiles = append(r.LeavesWithoutFiles, lc)
		}
	}
	return r, nil
}

// leafDirs returns where the node would have put the leaf's files: one
// candidate layout per storage pool directory of the VM's disks.
func (c *catalog) leafDirs(l ldapschema.Leaf) ([]format.Layout, error) {
	e := c.vms[l.VM]
	if e == nil {
		return nil, errors.New("the VM entry cannot be read")
	}
	vm, err := ldapschema.ParseVM(c.tree, e)
	if err != nil {
		return nil, err
	}
	vmCfg, err := c.vmBackup(l.VM)
	if err != nil {
		return nil, err
	}
	poolCfg, err := c.poolBackup(vm.Pool)
	if err != nil {
		return nil, err
	}
	cfg, _, err := ldapschema.EffectiveConfig(vmCfg, poolCfg, c.global)
	if err != nil {
		return nil, err
	}
	disks, err := c.vmDisks(l.VM)
	if err != nil {
		return nil, err
	}
	pools := imagePools(disks)
	if len(pools) == 0 {
		pools[vm.Pool] = true
	}
	var out []format.Layout
	for _, p := range sorted(pools) {
		out = append(out, format.Layout{BackupRoot: cfg.RootDir, Kind: vm.StorageKind(), Pool: p, VM: l.VM, Leaf: l.Name})
	}
	return out, nil
}

// checkLeaf returns what is wrong with the files of l, and where.
func checkLeaf(ctx context.Context, dirs []format.Layout, byDir map[string]*Iteration, images ImageChecker) ([]string, string) {
	for _, d := range dirs {
		p := d.BackupDir()
		it := byDir[p]
		if it == nil {
			if st, err := os.Stat(p); err != nil || !st.IsDir() {
				continue
			}
			it = scanIteration(ctx, d.BackupRoot, d.Kind, d.Pool, d.VM, d.Leaf, images) // below a root not scanned
		}
		return it.Problems, p
	}
	p := dirs[0].BackupDir()
	if _, err := os.Stat(dirs[0].BackupRoot); err != nil {
		return []string{fmt.Sprintf("files gone: the backup root %s is not there (not mounted here?)", dirs[0].BackupRoot)}, p
	}
	return []string{"files gone: " + p + " does not exist"}, p
}
