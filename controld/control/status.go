package control

import (
	"errors"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// LeafStatus is one leaf as `controld status` shows it.
type LeafStatus struct {
	Leaf        string   `json:"leaf"`
	Mode        string   `json:"mode"`
	ReturnValue int      `json:"returnValue"`
	Meaning     string   `json:"meaning,omitempty"`
	State       string   `json:"state"`
	Progress    string   `json:"progress,omitempty"`
	Times       []string `json:"executionTime,omitempty"`
	// LastRestore is the leaf's record of its last restore, "" if none.
	LastRestore string `json:"lastRestore,omitempty"`
}

// VMStatus is a VM's running leaves and its last finished one.
type VMStatus struct {
	VM      string       `json:"vm"`
	Node    string       `json:"node"`
	Running []LeafStatus `json:"running,omitempty"`
	Last    *LeafStatus  `json:"last,omitempty"`
}

func leafStatus(l ldapschema.Leaf) LeafStatus {
	s := LeafStatus{Leaf: l.Name, Mode: l.Mode, ReturnValue: l.ReturnValue, State: l.State}
	if l.LastRestore != nil {
		s.LastRestore = l.LastRestore.String()
	}
	if l.ReturnValue != 0 {
		s.Meaning = ldapschema.ReturnCode(l.ReturnValue).String()
	}
	for _, v := range l.ExecutionTime {
		if p, ok := strings.CutPrefix(v, "progress: "); ok {
			s.Progress = p
			continue
		}
		if ldapschema.ParseBackupRecord([]string{v}) != nil {
			continue
		}
		s.Times = append(s.Times, v)
	}
	return s
}

// Status reads every VM's running leaves and last result from the directory.
func Status(store *ldapschema.Store) ([]VMStatus, error) {
	st, _, err := readStatus(store)
	return st, err
}

// readStatus is Status and, by VM, the name of its newest good backup
// (fsm.Leaf.GoodBackup), from the same read of the leaves.
func readStatus(store *ldapschema.Store) ([]VMStatus, map[string]string, error) {
	tree := store.Tree
	es, err := store.Search(tree.VirtualMachines(), ldap.ScopeWholeSubtree,
		"(|(objectClass="+ldapschema.ClassProvisioning+")(objectClass="+ldapschema.ClassVirtualMachine+"))", []string{"*"})
	if err != nil && !errors.Is(err, ldapschema.ErrNotFound) {
		return nil, nil, err
	}
	good := map[string]string{}
	by := newPerVM(func(vm string) *VMStatus { return &VMStatus{VM: vm} })
	for _, e := range es {
		if !isLeaf(e) {
			if vm, err := ldapschema.ParseVM(tree, e); err == nil {
				by.get(vm.Name).Node = vm.Node
			}
			continue
		}
		l, err := ldapschema.ParseLeaf(tree, e)
		if err != nil {
			continue
		}
		if l.FSM("").GoodBackup() && l.Name > good[l.VM] {
			good[l.VM] = l.Name
		}
		s := by.get(l.VM)
		if l.Mode != string(fsm.Finished) {
			s.Running = append(s.Running, leafStatus(l))
			continue
		}
		if s.Last == nil || l.Name > s.Last.Leaf {
			ls := leafStatus(l)
			s.Last = &ls
		}
	}
	for _, s := range by.by {
		sort.Slice(s.Running, func(i, j int) bool { return s.Running[i].Leaf < s.Running[j].Leaf })
	}
	return by.sorted(), good, nil
}

// perVM holds one T a VM, made by its constructor when the VM first comes
// up, and lists them in the order of the VMs' names.
type perVM[T any] struct {
	by     map[string]*T
	create func(vm string) *T
}

func newPerVM[T any](create func(vm string) *T) perVM[T] {
	return perVM[T]{by: map[string]*T{}, create: create}
}

func (p perVM[T]) get(vm string) *T {
	if p.by[vm] == nil {
		p.by[vm] = p.create(vm)
	}
	return p.by[vm]
}

func (p perVM[T]) sorted() []T {
	out := make([]T, 0, len(p.by))
	for _, vm := range slices.Sorted(maps.Keys(p.by)) {
		out = append(out, *p.by[vm])
	}
	return out
}

// StoreReport is a node's word on the chunk store of a backup root: its
// last garbage collection and verify, as the node published them in its
// lease entry.
type StoreReport struct {
	Node   string `json:"node"`
	Root   string `json:"root"`
	Report string `json:"report"`
}

// StoreReports returns what the nodes last said of their chunk stores.
func StoreReports(store *ldapschema.Store) ([]StoreReport, error) {
	leases, err := store.ReadLeases(store.Tree.Nodes())
	if err != nil {
		return nil, err
	}
	var out []StoreReport
	for _, l := range leases {
		node := strings.TrimPrefix(strings.SplitN(l.DN, ",", 2)[0], "cn=")
		for k, v := range l.Reports {
			if root, ok := strings.CutPrefix(k, ldapschema.ChunkStoreReport); ok {
				out = append(out, StoreReport{Node: node, Root: root, Report: v})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node+out[i].Root < out[j].Node+out[j].Root })
	return out, nil
}
