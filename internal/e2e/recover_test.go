package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/controld/recovery"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// recoverSetup is three VMs backed up twice each, as one batch per round:
// the first running (a restore must bring its guest back), the others shut
// off (faster). Each keeps two iterations.
func recoverSetup(t *testing.T) (*site, []*vm, [2]string) {
	t.Helper()
	s := newSite(t, env.root)
	vms := []*vm{s.addVM(true, 64, 0x51), s.addVM(false, 64, 0x52), s.addVM(false, 64, 0x53)}
	var names []string
	for _, v := range vms {
		names = append(names, v.name)
		if err := s.store.Update(s.store.Tree.VMBackup(v.name), "", map[string][]string{
			ldapschema.AttrBackupNumberOfIterations: {"2"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitFilled(vms[0]); err != nil {
		t.Fatal(err)
	}
	startControl(t)
	startNode(t, s.host, env.hv)
	var leaves [2]string
	start := time.Now()
	for round := range leaves {
		name, started := control.StartBackups(s.store, names, time.Now().Add(time.Duration(round)*time.Second))
		for _, st := range started {
			if st.Err != nil {
				t.Fatal(st.Err)
			}
			if l := waitLeaf(t, s.store, st.DN, leafLimit, modeIs("finished")); l.ReturnValue != 0 {
				t.Fatalf("backup %s of %s: return value %d", name, st.VM, l.ReturnValue)
			}
		}
		leaves[round] = name
	}
	t.Logf("6 backups of 3 VMs took %v", time.Since(start).Round(time.Millisecond))
	return s, vms, leaves
}

// recoverRun scans the site's backup root (as `controld recover PATH`
// does), validates and imports; recreate allows re-creating VM entries.
func recoverRun(t *testing.T, s *site, recreate bool) (*recovery.Plan, []recovery.ImportResult) {
	t.Helper()
	start := time.Now()
	scan := recovery.Scan(context.Background(), []recovery.RootSource{{Path: s.backup, Source: "command line"}},
		recovery.ScanOptions{Images: recovery.QemuImgChecker{}})
	plan, err := recovery.Validate(s.store, scan, recovery.ValidateOptions{Recreate: func(string) bool { return recreate }})
	if err != nil {
		t.Fatal(err)
	}
	results, err := recovery.Import(s.store, plan, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Error != "" {
			t.Fatalf("import of %s: %s", r.VM, r.Error)
		}
	}
	t.Logf("scan, validation and import took %v", time.Since(start).Round(time.Millisecond))
	return plan, results
}

// restorable lists the VM's leaves a restore can start from.
func (s *site) recoverRestorable(t *testing.T, vmName string) []string {
	t.Helper()
	ls, err := control.Leaves(s.store, vmName)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		if control.Restorable(l) {
			out = append(out, l.Name)
		}
	}
	return out
}

func (s *site) recoverLeaf(t *testing.T, vmName, name string) ldapschema.Leaf {
	t.Helper()
	e, err := s.store.Get(s.store.Tree.Leaf(vmName, name), "*")
	if err != nil {
		t.Fatal(err)
	}
	l, err := ldapschema.ParseLeaf(s.store.Tree, e)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// deleteSubtree removes dn and everything below it, deepest first.
func (s *site) recoverDeleteSubtree(t *testing.T, dn string) {
	t.Helper()
	es, err := s.store.SubtreeEntries(dn)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(es, func(i, j int) bool { return strings.Count(es[i].DN, ",") > strings.Count(es[j].DN, ",") })
	for _, e := range es {
		if err := s.store.Delete(e.DN); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecoverBackupSubtrees: the VMs' backup subtrees (configurations and
// leaves) are deleted from the directory; recover brings back every leaf
// under its own name and each VM's configuration from its saved LDIF, and a
// restore from a recovered leaf brings back the guest's data.
func TestRecoverBackupSubtrees(t *testing.T) {
	s, vms, leaves := recoverSetup(t)
	if err := writeGuest(vms[0], "vda", 0x61); err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		ls, err := control.Leaves(s.store, v.name)
		if err != nil || len(ls) != 2 {
			t.Fatalf("%s: leaves %v %v", v.name, ls, err)
		}
		for _, l := range ls {
			if err := s.store.Delete(l.DN); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.store.Delete(s.store.Tree.VMBackup(v.name)); err != nil {
			t.Fatal(err)
		}
	}

	plan, results := recoverRun(t, s, false)
	if len(plan.Strays) != 0 || len(plan.Broken()) != 0 {
		t.Fatalf("strays %+v, broken %+v", plan.Strays, plan.Broken())
	}
	if len(results) != 3 {
		t.Fatalf("imported %+v", results)
	}
	// The running VM's saved states were read as such, the others' placeholders too.
	for _, p := range plan.VMs {
		want := "placeholder"
		if p.VM == vms[0].name {
			want = "saved"
		}
		for _, it := range p.Iterations {
			if it.State != want {
				t.Fatalf("%s %s: state %q, want %q", p.VM, it.Leaf, it.State, want)
			}
		}
	}
	want := leaves[0] + " " + leaves[1]
	for _, v := range vms {
		if got := strings.Join(s.recoverRestorable(t, v.name), " "); got != want {
			t.Fatalf("%s: restorable %q, want %q", v.name, got, want)
		}
		e, err := s.store.Get(s.store.Tree.VMBackup(v.name), "*")
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := ldapschema.ParseBackupConfig(e)
		if err != nil || cfg.RootDir != s.backup || cfg.Iterations != 2 {
			t.Fatalf("%s: configuration %+v %v", v.name, cfg, err)
		}
	}
	l := s.recoverLeaf(t, vms[0].name, leaves[1])
	if !strings.HasPrefix(l.ExecutionTime[0], recovery.RecoveredPrefix) {
		t.Fatalf("recovered leaf does not say so: %q", l.ExecutionTime)
	}

	got := s.webUIRestore(t, vms[0], l, true)
	if got.ReturnValue != 0 {
		t.Fatalf("restore from a recovered leaf: return value %d", got.ReturnValue)
	}
	if !vms[0].running(t) {
		t.Fatal("the VM restored from a running backup does not run")
	}
	vms[0].guestReads(t, "vda", 0x51)

	// The storage and the directory agree now.
	scan := recovery.Scan(context.Background(), []recovery.RootSource{{Path: s.backup, Source: "test"}}, recovery.ScanOptions{})
	r, err := recovery.Check(context.Background(), s.store, scan, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Other tests' leaves share the directory: look at this site's VMs only.
	mine := map[string]bool{}
	for _, v := range vms {
		mine[v.name] = true
	}
	for _, l := range r.LeavesWithoutFiles {
		if mine[l.VM] {
			t.Fatalf("after recovery %s %s has no files: %q", l.VM, l.Leaf, l.Problems)
		}
	}
	if len(r.FilesWithoutLeaf) != 0 || len(r.Strays) != 0 || r.Checked < 6 {
		t.Fatalf("check after recovery: %+v", r)
	}
}

// TestRecoverFromBaseTree: the directory holds only the base tree (the VM
// entries, disks, configurations and leaves are gone). Recover re-creates the
// VMs from their saved LDIF, node included, so the node daemon takes the
// restore; an image cut to half, a missing XML and a directory of junk are
// each reported and skipped while the rest is recovered.
func TestRecoverFromBaseTree(t *testing.T) {
	s, vms, leaves := recoverSetup(t)
	if err := writeGuest(vms[0], "vda", 0x61); err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		s.recoverDeleteSubtree(t, s.store.Tree.VM(v.name))
	}
	iter := func(v *vm, leaf string) string {
		return filepath.Join(s.backup, "vm-persistent", "pool-a", v.name, leaf)
	}
	img := filepath.Join(iter(vms[1], leaves[1]), filepath.Base(vms[1].disks[0].Path)+"."+leaves[1])
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, st.Size()/2); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(iter(vms[2], leaves[0]), vms[2].name+".xml."+leaves[0])); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(s.backup, "junk")
	if err := os.MkdirAll(filepath.Join(junk, "more"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(junk, "notes.txt"), []byte("not a backup\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Without permission to re-create VMs nothing is imported.
	scan := recovery.Scan(context.Background(), []recovery.RootSource{{Path: s.backup, Source: "test"}}, recovery.ScanOptions{})
	plan, err := recovery.Validate(s.store, scan, recovery.ValidateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Ready()) != 0 {
		t.Fatalf("VMs ready without their entries: %+v", plan.Ready())
	}

	plan, results := recoverRun(t, s, true)
	broken := map[string]string{}
	for _, it := range plan.Broken() {
		broken[it.Dir] = strings.Join(it.Problems, "; ")
	}
	if len(broken) != 2 || !strings.Contains(broken[iter(vms[1], leaves[1])], "truncated") ||
		!strings.Contains(broken[iter(vms[2], leaves[0])], vms[2].name+".xml."+leaves[0]+" is missing") {
		t.Fatalf("broken iterations: %q", broken)
	}
	if len(plan.Strays) != 1 || plan.Strays[0].Path != junk {
		t.Fatalf("strays: %+v", plan.Strays)
	}
	if len(results) != 3 {
		t.Fatalf("imported %+v", results)
	}
	for i, want := range []string{leaves[0] + " " + leaves[1], leaves[0], leaves[1]} {
		if got := strings.Join(s.recoverRestorable(t, vms[i].name), " "); got != want {
			t.Fatalf("%s: restorable %q, want %q", vms[i].name, got, want)
		}
	}
	for _, v := range vms {
		e, err := s.store.Get(s.store.Tree.VM(v.name), "*")
		if err != nil {
			t.Fatalf("%s not re-created: %v", v.name, err)
		}
		if node := e.GetAttributeValue(ldapschema.AttrNode); node != s.host {
			t.Fatalf("%s re-created on node %q, want %q", v.name, node, s.host)
		}
		if _, err := s.store.Get(s.store.Tree.Disk(v.name, "vda")); err != nil {
			t.Fatalf("%s: disk not re-created: %v", v.name, err)
		}
	}
	// The broken iterations stay unknown: a second run imports nothing.
	if _, again := recoverRun(t, s, true); len(again) != 0 {
		t.Fatalf("a second recovery imported %+v", again)
	}

	got := s.webUIRestore(t, vms[0], s.recoverLeaf(t, vms[0].name, leaves[1]), true)
	if got.ReturnValue != 0 {
		t.Fatalf("restore of a re-created VM: return value %d", got.ReturnValue)
	}
	if !vms[0].running(t) {
		t.Fatal("the restored VM does not run")
	}
	vms[0].guestReads(t, "vda", 0x51)
	if _, err := s.store.Get(s.store.Tree.VM(vms[0].name)); errors.Is(err, ldapschema.ErrNotFound) {
		t.Fatal("the restore removed the re-created VM entry")
	}
}
