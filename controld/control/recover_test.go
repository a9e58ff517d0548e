package control

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// recoverFakeImages judges plain files: one starting with "bad" is corrupt.
type recoverFakeImages struct{}

func (recoverFakeImages) CheckImage(_ context.Context, path, _ string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if strings.HasPrefix(string(b), "bad") {
		return errors.New("corrupt: 3 corruptions, 0 check errors")
	}
	return nil
}

// recoverFake writes one iteration the way a node leaves it, with plain
// files for images and state.
type recoverFake struct {
	root, pool, vm, leaf string
	node                 string
	disks                []string // targets; images are <imagesDir>/<vm>-<target>.qcow2
	running              bool     // a saved state instead of the placeholder
	cfg                  *ldapschema.BackupConfig
}

func (f recoverFake) dir() string {
	return filepath.Join(f.root, ldapschema.StoragePersistent, f.pool, f.vm, f.leaf)
}

func (f recoverFake) image(target string) string {
	return filepath.Join("/var/virtualization/vm-persistent", f.pool, f.vm+"-"+target+".qcow2")
}

func (f recoverFake) file(base string) string { return filepath.Join(f.dir(), base+"."+f.leaf) }

// savedSubtree is the VM's subtree as the node saves it, under base.
func (f recoverFake) savedSubtree(base string) []*ldap.Entry {
	tree := ldapschema.Tree{Base: base}
	node := f.node
	if node == "" {
		node = "kvm-01"
	}
	es := []*ldap.Entry{
		ldapschema.EntryOf(ldapschema.NewVMAddRequest(tree, ldapschema.VM{Name: f.vm, Node: node, Pool: "vmpool-1"})),
		ldapschema.EntryOf(ldapschema.NewDevicesAddRequest(tree, f.vm)),
	}
	for _, d := range f.disks {
		es = append(es, ldapschema.EntryOf(ldapschema.NewDiskAddRequest(tree, f.vm, ldapschema.Disk{Target: d, SourceFile: f.image(d)})))
	}
	if f.cfg != nil {
		es = append(es, ldapschema.EntryOf(ldapschema.NewBackupConfigAddRequest(tree.VMBackup(f.vm), *f.cfg)))
	} else {
		req := ldap.NewAddRequest(tree.VMBackup(f.vm), nil)
		req.Attribute(ldapschema.AttrObjectClass, []string{"top", "organizationalUnit"})
		req.Attribute(ldapschema.AttrOU, []string{"backup"})
		es = append(es, ldapschema.EntryOf(req))
	}
	return es
}

func (f recoverFake) write(t *testing.T, base string) recoverFake {
	t.Helper()
	if err := os.MkdirAll(f.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	state := []byte(format.Placeholder)
	if f.running {
		state = recoverSaveImage(f.vm, 4096)
	}
	xml := "<domain type='qemu'>\n  <name>" + f.vm + "</name>\n  <devices>\n"
	for _, d := range f.disks {
		xml += "    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" + f.image(d) + "'/><target dev='" + d + "' bus='virtio'/></disk>\n"
	}
	xml += "    <disk type='file' device='cdrom'><source file='/iso/install.iso'/><target dev='hdc'/></disk>\n  </devices>\n</domain>\n"
	files := map[string][]byte{
		f.vm + ".state": state,
		f.vm + ".xml":   []byte(xml),
		f.vm + ".ldif":  []byte(ldapschema.FormatLDIF(f.savedSubtree(base))),
	}
	for _, d := range f.disks {
		files[filepath.Base(f.image(d))] = []byte("image of " + d)
	}
	for name, b := range files {
		if err := os.WriteFile(f.file(name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// A libvirt save image as format.ReadState reads it: a header of
// recoverSaveHeader bytes that starts with its magic, the XML, then the
// QEMU stream.
const (
	recoverSaveMagic  = "LibvirtQemudSave"
	recoverSaveHeader = 16 + 19*4
	recoverQEVM       = "QEVM"
)

// recoverSaveImage is a libvirt save image: header, XML, then the QEMU stream.
func recoverSaveImage(vm string, streamBytes int) []byte {
	xml := []byte("<domain><name>" + vm + "</name></domain>\x00")
	h := make([]byte, recoverSaveHeader)
	copy(h, recoverSaveMagic)
	binary.LittleEndian.PutUint32(h[16:], 2)
	binary.LittleEndian.PutUint32(h[20:], uint32(len(xml)))
	binary.LittleEndian.PutUint32(h[24:], 1)
	b := append(h, xml...)
	b = append(b, recoverQEVM...)
	return append(b, make([]byte, streamBytes)...)
}

func recoverScan(t *testing.T, roots ...string) *ScanReport {
	t.Helper()
	var rs []RootSource
	for _, r := range roots {
		rs = append(rs, RootSource{Path: r, Source: "test"})
	}
	return ScanBackups(context.Background(), rs, ScanOptions{Images: recoverFakeImages{}})
}

func recoverStatuses(its []*Iteration) map[string]IterationStatus {
	m := map[string]IterationStatus{}
	for _, it := range its {
		m[it.VM+"/"+it.Leaf] = it.Status
	}
	return m
}

func recoverFind(t *testing.T, its []*Iteration, vm, leaf string) *Iteration {
	t.Helper()
	for _, it := range its {
		if it.VM == vm && it.Leaf == leaf {
			return it
		}
	}
	t.Fatalf("iteration %s/%s not found", vm, leaf)
	return nil
}

func recoverProblems(t *testing.T, it *Iteration, want string) {
	t.Helper()
	if !strings.Contains(strings.Join(it.Problems, "\n"), want) {
		t.Fatalf("%s/%s: problems %q do not mention %q", it.VM, it.Leaf, it.Problems, want)
	}
}

// TestScanFakeTree: every way an iteration can be broken is reported with
// its reason, each alone, and the scan goes on to find the rest; what is not
// a backup at all is listed as a stray.
func TestScanFakeTree(t *testing.T) {
	root := t.TempDir()
	const base = "o=elsewhere,c=ch" // the saved LDIF's base need not be ours
	ok := recoverFake{root: root, pool: "pool-a", vm: "vm-ok", leaf: "20240101T030000Z", disks: []string{"vda", "vdb"}, running: true}.write(t, base)
	recoverFake{root: root, pool: "pool-a", vm: "vm-off", leaf: "20240101T030000Z", disks: []string{"vda"}}.write(t, base)

	broken := []struct {
		name, leaf string
		breakIt    func(f recoverFake) string // returns what the report must say
	}{
		{"missing XML", "20240102T030000Z", func(f recoverFake) string {
			os.Remove(f.file(f.vm + ".xml"))
			return f.vm + ".xml.20240102T030000Z is missing"
		}},
		{"corrupt image", "20240103T030000Z", func(f recoverFake) string {
			os.WriteFile(f.file(filepath.Base(f.image("vda"))), []byte("bad image"), 0o640)
			return "disk vda"
		}},
		{"missing image", "20240104T030000Z", func(f recoverFake) string {
			os.Remove(f.file(filepath.Base(f.image("vda"))))
			return "vm-b-vda.qcow2.20240104T030000Z is missing"
		}},
		{"save image cut short", "20240105T030000Z", func(f recoverFake) string {
			b := recoverSaveImage(f.vm, 4096)
			os.WriteFile(f.file(f.vm+".state"), b[:recoverSaveHeader+10], 0o640)
			return "saved state cut short"
		}},
		{"state is neither", "20240106T030000Z", func(f recoverFake) string {
			os.WriteFile(f.file(f.vm+".state"), []byte("garbage"), 0o640)
			return "neither a saved VM state nor the placeholder"
		}},
		{"XML of another VM", "20240107T030000Z", func(f recoverFake) string {
			os.WriteFile(f.file(f.vm+".xml"), []byte("<domain><name>other</name></domain>"), 0o640)
			return `names domain "other"`
		}},
		{"LDIF beyond the VM", "20240108T030000Z", func(f recoverFake) string {
			b, _ := os.ReadFile(f.file(f.vm + ".ldif"))
			b = append(b, []byte("\ndn: ou=backup,ou=configuration,ou=virtualization,ou=services,"+base+"\nou: backup\n")...)
			os.WriteFile(f.file(f.vm+".ldif"), b, 0o640)
			return "is not part of VM vm-b"
		}},
		{"LDIF that does not parse", "20240109T030000Z", func(f recoverFake) string {
			os.WriteFile(f.file(f.vm+".ldif"), []byte("dn: x\n continuation\nnot ldif"), 0o640)
			return "LDIF line"
		}},
	}
	for _, b := range broken {
		f := recoverFake{root: root, pool: "pool-b", vm: "vm-b", leaf: b.leaf, disks: []string{"vda"}, running: true}.write(t, base)
		want := b.breakIt(f)
		t.Run(b.name, func(t *testing.T) {
			s := recoverScan(t, root)
			it := recoverFind(t, s.Iterations, "vm-b", b.leaf)
			if it.Status != StatusBroken {
				t.Fatalf("status %s, want broken", it.Status)
			}
			recoverProblems(t, it, want)
		})
	}

	// Not backups at all.
	mustWrite := func(p, s string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(filepath.Join(root, "junk", "notes.txt"), "junk")
	mustWrite(filepath.Join(root, "README"), "a file at the root")
	mustWrite(filepath.Join(root, "vm-persistent", "pool-a", "vm-ok", "latest", "x"), "not a leaf name")
	mustWrite(filepath.Join(ok.dir(), "vm-ok.xml."+ok.leaf+".tmp"), "a partial copy")

	s := ScanBackups(context.Background(), []RootSource{
		{Path: root, Source: "test"}, {Path: root + "/", Source: "again"}, {Path: filepath.Join(root, "nope"), Source: "test"},
	}, ScanOptions{Images: recoverFakeImages{}})

	if len(s.Roots) != 2 || s.Roots[0].Error != "" || s.Roots[1].Error == "" {
		t.Fatalf("roots %+v: want the root once and the missing one with an error", s.Roots)
	}
	got := recoverStatuses(s.Iterations)
	want := map[string]IterationStatus{"vm-ok/20240101T030000Z": StatusNew, "vm-off/20240101T030000Z": StatusNew}
	for _, b := range broken {
		want["vm-b/"+b.leaf] = StatusBroken
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("iterations %v\nwant %v", got, want)
	}
	var strays []string
	for _, st := range s.Strays {
		strays = append(strays, strings.TrimPrefix(st.Path, root))
	}
	sort.Strings(strays)
	if w := []string{"/README", "/junk", "/vm-persistent/pool-a/vm-ok/latest"}; !reflect.DeepEqual(strays, w) {
		t.Fatalf("strays %q, want %q", strays, w)
	}

	it := recoverFind(t, s.Iterations, "vm-ok", ok.leaf)
	if it.State != "saved" || it.Node != "kvm-01" || it.VMPool != "vmpool-1" || len(it.Disks) != 2 || it.Bytes == 0 {
		t.Fatalf("complete iteration read as %+v", it)
	}
	if it.Disks[0].Target != "vda" || it.Disks[0].File != "vm-ok-vda.qcow2."+ok.leaf {
		t.Fatalf("disks %+v", it.Disks)
	}
	if len(it.Notes) != 1 || !strings.Contains(it.Notes[0], ".tmp") {
		t.Fatalf("the partial copy beside the files is not noted: %q", it.Notes)
	}
	if off := recoverFind(t, s.Iterations, "vm-off", "20240101T030000Z"); off.State != "placeholder" {
		t.Fatalf("shut-off VM's state read as %q", off.State)
	}
}

// recoverSlapd starts a directory of the test's own.
func recoverSlapd(t *testing.T) *ldapschema.Store {
	t.Helper()
	s, err := testenv.StartSlapd(testenv.SlapdOptions{Dir: filepath.Join(t.TempDir(), "slapd"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	st, err := ldapschema.Dial(ldapschema.StoreOptions{URL: s.URL, BindDN: s.AdminDN, Password: s.AdminPassword, Base: s.Base})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func recoverCfg(root string, iterations int) *ldapschema.BackupConfig {
	return &ldapschema.BackupConfig{RootDir: root, RetainDir: "/var/virtualization/retain", Iterations: iterations}
}

// recoverAddSaved writes a saved subtree into the directory, as it was before the loss.
func recoverAddSaved(t *testing.T, store *ldapschema.Store, f recoverFake) {
	t.Helper()
	for _, e := range f.savedSubtree(store.Tree.Base) {
		if err := store.Add(ldapschema.AddRequestOf(e)); err != nil {
			t.Fatal(err)
		}
	}
}

func recoverAddLeaf(t *testing.T, store *ldapschema.Store, vm, leaf, mode string, rv int) {
	t.Helper()
	req := ldapschema.NewLeafAddRequest(store.Tree, vm, leaf, mode, leaf)
	req.Attributes[len(req.Attributes)-1].Vals = []string{fmt.Sprint(rv)}
	if err := store.Add(req); err != nil {
		t.Fatal(err)
	}
}

func recoverValidate(t *testing.T, store *ldapschema.Store, scan *ScanReport, recreate bool) *RecoverPlan {
	t.Helper()
	plan, err := ValidateRecovery(store, scan, ValidateOptions{Recreate: func(string) bool { return recreate }})
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func recoverVMPlan(t *testing.T, plan *RecoverPlan, vm string) *VMPlan {
	t.Helper()
	for _, p := range plan.VMs {
		if p.VM == vm {
			return p
		}
	}
	t.Fatalf("no plan for %s", vm)
	return nil
}

func recoverBlockers(p *VMPlan) []BlockerKind {
	var out []BlockerKind
	for _, b := range p.Blockers {
		out = append(out, b.Kind)
	}
	return out
}

// TestValidateAndImport: the validation says what is new, known, known
// under another state and what stands in the way, changing nothing; the
// import re-creates exactly the missing entries, VM entries from the LDIF
// only where allowed.
func TestValidateAndImport(t *testing.T) {
	store := recoverSlapd(t)
	tree := store.Tree
	root := t.TempDir()
	cfg := recoverCfg(root, 3)
	now := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

	// vm-a: entry kept, its ou=backup (config and leaves) lost.
	a1 := recoverFake{root: root, pool: "pool-a", vm: "vm-a", leaf: "20240101T030000Z", disks: []string{"vda"}, cfg: cfg}.write(t, tree.Base)
	recoverFake{root: root, pool: "pool-a", vm: "vm-a", leaf: "20240102T030000Z", disks: []string{"vda"}, cfg: cfg, running: true}.write(t, tree.Base)
	sub := a1.savedSubtree(tree.Base)
	for _, e := range sub[:len(sub)-1] { // all but ou=backup
		if err := store.Add(ldapschema.AddRequestOf(e)); err != nil {
			t.Fatal(err)
		}
	}
	// vm-b: entry lost entirely, saved on node kvm-gone.
	recoverFake{root: root, pool: "pool-a", vm: "vm-b", leaf: "20240101T030000Z", node: "kvm-gone", disks: []string{"vda", "vdb"}, cfg: cfg}.write(t, tree.Base)
	// vm-c: one leaf known and good, one deleting, one new.
	c := recoverFake{root: root, pool: "pool-a", vm: "vm-c", leaf: "20240101T030000Z", disks: []string{"vda"}, cfg: cfg}.write(t, tree.Base)
	recoverAddSaved(t, store, c)
	recoverAddLeaf(t, store, "vm-c", "20240101T030000Z", "finished", 0)
	recoverFake{root: root, pool: "pool-a", vm: "vm-c", leaf: "20240102T030000Z", disks: []string{"vda"}, cfg: cfg}.write(t, tree.Base)
	recoverAddLeaf(t, store, "vm-c", "20240102T030000Z", "deleting", 0)
	recoverFake{root: root, pool: "pool-a", vm: "vm-c", leaf: "20240103T030000Z", disks: []string{"vda"}, cfg: cfg}.write(t, tree.Base)
	// vm-d: the configuration says its backups are elsewhere.
	d := recoverFake{root: root, pool: "pool-a", vm: "vm-d", leaf: "20240101T030000Z", disks: []string{"vda"}, cfg: recoverCfg("/srv/other", 1)}.write(t, tree.Base)
	recoverAddSaved(t, store, d)

	// A copy of one of vm-a's iterations on a second storage.
	root2 := t.TempDir()
	recoverFake{root: root2, pool: "pool-a", vm: "vm-a", leaf: "20240101T030000Z", disks: []string{"vda"}, cfg: cfg}.write(t, tree.Base)

	scan := recoverScan(t, root, root2)
	before, _ := store.SubtreeEntries(tree.VirtualMachines())

	plan := recoverValidate(t, store, scan, false)
	if after, _ := store.SubtreeEntries(tree.VirtualMachines()); len(after) != len(before) {
		t.Fatalf("validation changed the directory: %d entries, were %d", len(after), len(before))
	}
	pa, pb, pc, pd := recoverVMPlan(t, plan, "vm-a"), recoverVMPlan(t, plan, "vm-b"), recoverVMPlan(t, plan, "vm-c"), recoverVMPlan(t, plan, "vm-d")
	if !pa.Ready() || pa.Entry != EntryExists || pa.BackupEntry != BackupEntryFromLDIF || len(pa.New()) != 2 ||
		pa.Count(StatusDuplicate) != 1 || pa.Iterations[1].Root != root2 {
		t.Fatalf("vm-a: %+v", pa)
	}
	if pb.Ready() || !reflect.DeepEqual(recoverBlockers(pb), []BlockerKind{BlockVMMissing}) || pb.LDIFLeaf != "20240101T030000Z" {
		t.Fatalf("vm-b without permission to re-create: %+v", pb)
	}
	if got := recoverStatuses(pc.Iterations); !reflect.DeepEqual(got, map[string]IterationStatus{
		"vm-c/20240101T030000Z": StatusKnown, "vm-c/20240102T030000Z": StatusKnownDifferent, "vm-c/20240103T030000Z": StatusNew}) {
		t.Fatalf("vm-c statuses %v", got)
	}
	if !pc.Ready() || pc.BackupEntry != BackupEntryExists {
		t.Fatalf("vm-c: %+v", pc)
	}
	if !reflect.DeepEqual(recoverBlockers(pd), []BlockerKind{BlockLocation}) || !strings.Contains(pd.Blockers[0].Message, "/srv/other") {
		t.Fatalf("vm-d: %+v", pd.Blockers)
	}

	// With permission vm-b is re-created; the node it names is unknown.
	plan = recoverValidate(t, store, scan, true)
	pb = recoverVMPlan(t, plan, "vm-b")
	if !pb.Ready() || pb.Entry != EntryRecreate || pb.Node != "kvm-gone" || !strings.Contains(strings.Join(pb.Notes, "\n"), `"kvm-gone"`) {
		t.Fatalf("vm-b with permission: %+v", pb)
	}
	results, err := ImportRecovered(store, plan, now)
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
	leaves, err := Leaves(store, "vm-a")
	if err != nil || len(leaves) != 2 {
		t.Fatalf("vm-a leaves %+v %v", leaves, err)
	}
	for _, l := range leaves {
		if !Restorable(l) || l.State != l.Name || l.ExecutionTime[0] != RecoveredPrefix+"20240301T120000Z" {
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
	plan = recoverValidate(t, store, scan, true)
	for _, p := range plan.VMs {
		if p.VM != "vm-d" && len(p.New()) != 0 {
			t.Fatalf("%s still has new iterations after the import", p.VM)
		}
	}
}

// TestImportRollsBack: a VM whose entries the directory refuses midway is
// removed again entirely; the other VMs are imported.
func TestImportRollsBack(t *testing.T) {
	store := recoverSlapd(t)
	tree := store.Tree
	root := t.TempDir()
	cfg := recoverCfg(root, 2)
	recoverFake{root: root, pool: "pool-a", vm: "vm-good", leaf: "20240101T030000Z", disks: []string{"vda"}, cfg: cfg}.write(t, tree.Base)
	bad := recoverFake{root: root, pool: "pool-a", vm: "vm-bad", leaf: "20240101T030000Z", disks: []string{"vda", "vdb"}, cfg: cfg}.write(t, tree.Base)
	// The second disk's saved entry has an attribute this schema does not know.
	b, _ := os.ReadFile(bad.file("vm-bad.ldif"))
	text := strings.Replace(string(b), "sstDisk: vdb\n", "sstDisk: vdb\nsstNoSuchAttribute: 1\n", 1)
	if err := os.WriteFile(bad.file("vm-bad.ldif"), []byte(text), 0o640); err != nil {
		t.Fatal(err)
	}
	// The containers up to ou=virtual machines are gone too.
	if err := store.Delete(tree.VirtualMachines()); err != nil {
		t.Fatal(err)
	}

	plan := recoverValidate(t, store, recoverScan(t, root), true)
	if len(plan.Containers) != 1 || plan.Containers[0] != tree.VirtualMachines() {
		t.Fatalf("containers to create: %q", plan.Containers)
	}
	results, err := ImportRecovered(store, plan, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	byVM := map[string]ImportResult{}
	for _, r := range results {
		byVM[r.VM] = r
	}
	if r := byVM["vm-good"]; r.Error != "" || len(r.Leaves) != 1 {
		t.Fatalf("vm-good: %+v", r)
	}
	r := byVM["vm-bad"]
	if r.Error == "" || !r.RolledBack || !strings.Contains(r.Error, "sstDisk=vdb") {
		t.Fatalf("vm-bad: %+v", r)
	}
	if _, err := store.Get(tree.VM("vm-bad")); !errors.Is(err, ldapschema.ErrNotFound) {
		t.Fatalf("vm-bad's entry stays after the rollback: %v", err)
	}
	if _, err := store.Get(tree.Leaf("vm-good", "20240101T030000Z")); err != nil {
		t.Fatal(err)
	}
}

// TestValidateNoConfig: a VM that no configuration reaches is held back
// until one is added; validating again then lets it through.
func TestValidateNoConfig(t *testing.T) {
	store := recoverSlapd(t)
	tree := store.Tree
	root := t.TempDir()
	f := recoverFake{root: root, pool: "pool-a", vm: "vm-n", leaf: "20240101T030000Z", disks: []string{"vda"}}.write(t, tree.Base)
	recoverAddSaved(t, store, f)
	if err := store.Delete(tree.VMBackup("vm-n")); err != nil {
		t.Fatal(err)
	}
	scan := recoverScan(t, root)
	p := recoverVMPlan(t, recoverValidate(t, store, scan, false), "vm-n")
	if !reflect.DeepEqual(recoverBlockers(p), []BlockerKind{BlockNoConfig}) || p.BackupEntry != BackupEntryContainer {
		t.Fatalf("plan %+v", p)
	}
	if err := store.Add(ldapschema.NewBackupConfigAddRequest(tree.GlobalBackup(), *recoverCfg(root, 1))); err != nil {
		t.Fatal(err)
	}
	p = recoverVMPlan(t, recoverValidate(t, store, scan, false), "vm-n")
	if !p.Ready() || p.Config != tree.GlobalBackup() {
		t.Fatalf("after adding a global configuration: %+v", p)
	}
}

// TestCheckBackups: leaves whose files are gone or broken, files no leaf
// knows and strays are all listed; leaves still in work are not checked.
func TestCheckBackups(t *testing.T) {
	store := recoverSlapd(t)
	tree := store.Tree
	root := t.TempDir()
	cfg := recoverCfg(root, 5)
	mk := func(leaf string) recoverFake {
		return recoverFake{root: root, pool: "pool-a", vm: "vm-k", leaf: leaf, disks: []string{"vda"}, cfg: cfg}.write(t, tree.Base)
	}
	ok := mk("20240101T030000Z")
	recoverAddSaved(t, store, ok)
	recoverAddLeaf(t, store, "vm-k", ok.leaf, "finished", 0)

	gone := mk("20240102T030000Z")
	os.RemoveAll(gone.dir())
	recoverAddLeaf(t, store, "vm-k", gone.leaf, "finished", 0)

	damaged := mk("20240103T030000Z")
	os.WriteFile(damaged.file("vm-k-vda.qcow2"), []byte("bad"), 0o640)
	recoverAddLeaf(t, store, "vm-k", damaged.leaf, "finished", 0)

	busy := mk("20240104T030000Z")
	os.Remove(busy.file("vm-k.xml"))
	recoverAddLeaf(t, store, "vm-k", busy.leaf, "retaining", 0)

	unknown := mk("20240105T030000Z")
	os.MkdirAll(filepath.Join(root, "lost+found"), 0o700)

	// Scanning another root does not hide the leaves' own files.
	other := t.TempDir()
	r, err := CheckBackups(context.Background(), store, recoverScan(t, other, root), recoverFakeImages{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Checked != 3 {
		t.Fatalf("checked %d leaves, want 3", r.Checked)
	}
	var missing []string
	for _, l := range r.LeavesWithoutFiles {
		missing = append(missing, l.Leaf+": "+strings.Join(l.Problems, "; "))
	}
	if len(missing) != 2 || !strings.HasPrefix(missing[0], gone.leaf+": files gone") ||
		!strings.HasPrefix(missing[1], damaged.leaf+": disk vda") {
		t.Fatalf("leaves without files: %q", missing)
	}
	if len(r.FilesWithoutLeaf) != 1 || r.FilesWithoutLeaf[0].Leaf != unknown.leaf {
		t.Fatalf("files without a leaf: %+v", r.FilesWithoutLeaf)
	}
	if len(r.Strays) != 1 || filepath.Base(r.Strays[0].Path) != "lost+found" {
		t.Fatalf("strays: %+v", r.Strays)
	}
	if len(r.Skipped) != 1 || r.Skipped[0].Leaf != busy.leaf {
		t.Fatalf("skipped: %+v", r.Skipped)
	}
	if r.Clean() {
		t.Fatal("a check with findings reads as clean")
	}

	// Once recovered and the broken leaves removed, both sides agree.
	for _, l := range []string{gone.leaf, damaged.leaf, busy.leaf} {
		store.Delete(tree.Leaf("vm-k", l))
	}
	os.RemoveAll(damaged.dir())
	os.RemoveAll(busy.dir())
	os.RemoveAll(filepath.Join(root, "lost+found"))
	scan := recoverScan(t, root)
	if _, err := ImportRecovered(store, recoverValidate(t, store, scan, false), time.Now()); err != nil {
		t.Fatal(err)
	}
	r, err = CheckBackups(context.Background(), store, recoverScan(t, root), recoverFakeImages{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() || r.Checked != 2 {
		t.Fatalf("after recovery: %+v", r)
	}
}
