package recovery

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// TestValidateAndImport: the validation says what is new, known, known
// under another state and what stands in the way, changing nothing; the
// import re-creates exactly the missing entries, VM entries from the LDIF
// only where allowed.
func TestValidateAndImport(t *testing.T) {
	s := newSite(t, 3)
	store, tree, root, cfg := s.store, s.store.Tree, s.root, s.cfg
	now := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

	// vm-a: entry kept, its ou=backup (config and leaves) lost.
	a1 := s.backup("vm-a", "20240101T030000Z", "vda")
	fakeBackup{root: root, pool: "pool-a", vm: "vm-a", leaf: "20240102T030000Z", disks: []string{"vda"}, cfg: cfg, running: true}.write(t, tree.Base)
	sub := a1.savedSubtree(tree.Base)
	for _, e := range sub[:len(sub)-1] { // all but ou=backup
		if err := store.Add(ldapschema.AddRequestOf(e)); err != nil {
			t.Fatal(err)
		}
	}
	// vm-b: entry lost entirely, saved on node kvm-gone.
	fakeBackup{root: root, pool: "pool-a", vm: "vm-b", leaf: "20240101T030000Z", node: "kvm-gone", disks: []string{"vda", "vdb"}, cfg: cfg}.write(t, tree.Base)
	// vm-c: one leaf known and good, one deleting, one new.
	c := s.backup("vm-c", "20240101T030000Z", "vda")
	addSaved(t, store, c)
	addLeaf(t, store, "vm-c", "20240101T030000Z", "finished", 0)
	s.backup("vm-c", "20240102T030000Z", "vda")
	addLeaf(t, store, "vm-c", "20240102T030000Z", "deleting", 0)
	s.backup("vm-c", "20240103T030000Z", "vda")
	// vm-d: the configuration says its backups are elsewhere.
	d := fakeBackup{root: root, pool: "pool-a", vm: "vm-d", leaf: "20240101T030000Z", disks: []string{"vda"}, cfg: backupConfig("/srv/other", 1)}.write(t, tree.Base)
	addSaved(t, store, d)

	// A copy of one of vm-a's iterations on a second storage.
	root2 := t.TempDir()
	fakeBackup{root: root2, pool: "pool-a", vm: "vm-a", leaf: "20240101T030000Z", disks: []string{"vda"}, cfg: cfg}.write(t, tree.Base)

	scan := scanRoots(t, root, root2)
	before, _ := store.SubtreeEntries(tree.VirtualMachines())

	plan := validate(t, store, scan, false)
	if after, _ := store.SubtreeEntries(tree.VirtualMachines()); len(after) != len(before) {
		t.Fatalf("validation changed the directory: %d entries, were %d", len(after), len(before))
	}
	pa, pb, pc, pd := vmPlan(t, plan, "vm-a"), vmPlan(t, plan, "vm-b"), vmPlan(t, plan, "vm-c"), vmPlan(t, plan, "vm-d")
	if !pa.Ready() || pa.Entry != EntryExists || pa.BackupEntry != BackupEntryFromLDIF || len(pa.New()) != 2 ||
		pa.Count(StatusDuplicate) != 1 || pa.Iterations[1].Root != root2 {
		t.Fatalf("vm-a: %+v", pa)
	}
	if pb.Ready() || !reflect.DeepEqual(blockerKinds(pb), []BlockerKind{BlockVMMissing}) || pb.LDIFLeaf != "20240101T030000Z" {
		t.Fatalf("vm-b without permission to re-create: %+v", pb)
	}
	if got := statuses(pc.Iterations); !reflect.DeepEqual(got, map[string]IterationStatus{
		"vm-c/20240101T030000Z": StatusKnown, "vm-c/20240102T030000Z": StatusKnownDifferent, "vm-c/20240103T030000Z": StatusNew}) {
		t.Fatalf("vm-c statuses %v", got)
	}
	if !pc.Ready() || pc.BackupEntry != BackupEntryExists {
		t.Fatalf("vm-c: %+v", pc)
	}
	if !reflect.DeepEqual(blockerKinds(pd), []BlockerKind{BlockLocation}) || !strings.Contains(pd.Blockers[0].Message, "/srv/other") {
		t.Fatalf("vm-d: %+v", pd.Blockers)
	}

	// With permission vm-b is re-created; the node it names is unknown.
	plan = validate(t, store, scan, true)
	pb = vmPlan(t, plan, "vm-b")
	if !pb.Ready() || pb.Entry != EntryRecreate || pb.Node != "kvm-gone" || !strings.Contains(strings.Join(pb.Notes, "\n"), `"kvm-gone"`) {
		t.Fatalf("vm-b with permission: %+v", pb)
	}
	results, err := Import(store, plan, now)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, r := range results {
		if r.Error != "" {
			t.Fatalf("%s: %s", r.VM, r.Error)
		}
		got[r.VM] = r.Leaves
	}
	if want := map[string][]string{
		"vm-a": {"20240101T030000Z", "20240102T030000Z"}, "vm-b": {"20240101T030000Z"}, "vm-c": {"20240103T030000Z"},
	}; !reflect.DeepEqual(got, want) {
		t.Fatalf("imported %v, want %v", got, want)
	}

	// The leaves are finished, successful and say they were recovered.
	leaves, err := control.Leaves(store, "vm-a")
	if err != nil || len(leaves) != 2 {
		t.Fatalf("vm-a leaves %+v %v", leaves, err)
	}
	for _, l := range leaves {
		if !fsm.Restorable(l.FSM("")) || l.State != l.Name || l.ExecutionTime[0] != RecoveredPrefix+"20240301T120000Z" {
			t.Fatalf("recovered leaf %+v", l)
		}
	}
	// vm-a's own configuration is back; vm-b is back with its node and disks.
	if e, err := store.Get(tree.VMBackup("vm-a"), "*"); err != nil || !ldapschema.HasBackupClass(e) {
		t.Fatalf("vm-a's backup configuration not re-created: %v", err)
	}
	e, err := store.Get(tree.VM("vm-b"), "*")
	if err != nil || e.GetAttributeValue(ldapschema.AttrNode) != "kvm-gone" {
		t.Fatalf("vm-b entry: %v %v", e, err)
	}
	for _, disk := range []string{"vda", "vdb"} {
		if _, err := store.Get(tree.Disk("vm-b", disk)); err != nil {
			t.Fatalf("vm-b disk %s: %v", disk, err)
		}
	}
	// The deleting leaf was left alone.
	if e, _ := store.Get(tree.Leaf("vm-c", "20240102T030000Z"), "*"); e.GetAttributeValue(ldapschema.AttrMode) != "deleting" {
		t.Fatal("a leaf in another state was changed")
	}

	// Validating again finds nothing new.
	plan = validate(t, store, scan, true)
	for _, p := range plan.VMs {
		if p.VM != "vm-d" && len(p.New()) != 0 {
			t.Fatalf("%s still has new iterations after the import", p.VM)
		}
	}
}

// TestValidateNoConfig: a VM that no configuration reaches is held back
// until one is added; validating again then lets it through.
func TestValidateNoConfig(t *testing.T) {
	store := startDirectory(t)
	tree := store.Tree
	root := t.TempDir()
	f := fakeBackup{root: root, pool: "pool-a", vm: "vm-n", leaf: "20240101T030000Z", disks: []string{"vda"}}.write(t, tree.Base)
	addSaved(t, store, f)
	if err := store.Delete(tree.VMBackup("vm-n")); err != nil {
		t.Fatal(err)
	}
	scan := scanRoots(t, root)
	p := vmPlan(t, validate(t, store, scan, false), "vm-n")
	if !reflect.DeepEqual(blockerKinds(p), []BlockerKind{BlockNoConfig}) || p.BackupEntry != BackupEntryContainer {
		t.Fatalf("plan %+v", p)
	}
	if err := store.Add(ldapschema.NewBackupConfigAddRequest(tree.GlobalBackup(), *backupConfig(root, 1))); err != nil {
		t.Fatal(err)
	}
	p = vmPlan(t, validate(t, store, scan, false), "vm-n")
	if !p.Ready() || p.Config != tree.GlobalBackup() {
		t.Fatalf("after adding a global configuration: %+v", p)
	}
}
