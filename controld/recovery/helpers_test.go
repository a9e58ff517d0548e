package recovery

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// fakeImages judges plain files: one starting with "bad" is corrupt.
type fakeImages struct{}

func (fakeImages) CheckImage(_ context.Context, path, _ string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if strings.HasPrefix(string(b), "bad") {
		return errors.New("corrupt: 3 corruptions, 0 check errors")
	}
	return nil
}

// fakeBackup writes one iteration the way a node leaves it, with plain
// files for images and state (or empty qcow2 images).
type fakeBackup struct {
	root, pool, vm, leaf string
	node                 string
	disks                []string // targets; images are <imagesDir>/<vm>-<target>.qcow2
	running              bool     // a saved state instead of the placeholder
	qcow2                bool     // real (empty) images for qemu-img, not plain files
	cfg                  *ldapschema.BackupConfig
}

func (f fakeBackup) dir() string {
	return filepath.Join(f.root, ldapschema.StoragePersistent, f.pool, f.vm, f.leaf)
}

func (f fakeBackup) image(target string) string {
	return filepath.Join("/var/virtualization/vm-persistent", f.pool, f.vm+"-"+target+".qcow2")
}

func (f fakeBackup) file(base string) string { return filepath.Join(f.dir(), base+"."+f.leaf) }

// savedSubtree is the VM's subtree as the node saves it, under base.
func (f fakeBackup) savedSubtree(base string) []*ldap.Entry {
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

func (f fakeBackup) write(t *testing.T, base string) fakeBackup {
	t.Helper()
	if err := os.MkdirAll(f.dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	state := []byte(format.Placeholder)
	if f.running {
		state = saveImage(f.vm, 4096)
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
		if !f.qcow2 {
			files[filepath.Base(f.image(d))] = []byte("image of " + d)
		}
	}
	for name, b := range files {
		if err := os.WriteFile(f.file(name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range f.disks {
		if !f.qcow2 {
			break
		}
		img := f.file(filepath.Base(f.image(d)))
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "16M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
	}
	return f
}

// A libvirt save image as format.ReadState reads it: a header of
// saveHeader bytes that starts with its magic, the XML, then the
// QEMU stream.
const (
	saveMagic  = "LibvirtQemudSave"
	saveHeader = 16 + 19*4
	qemuMagic  = "QEVM"
)

// saveImage is a libvirt save image: header, XML, then the QEMU stream.
func saveImage(vm string, streamBytes int) []byte {
	xml := []byte("<domain><name>" + vm + "</name></domain>\x00")
	h := make([]byte, saveHeader)
	copy(h, saveMagic)
	binary.LittleEndian.PutUint32(h[16:], 2)
	binary.LittleEndian.PutUint32(h[20:], uint32(len(xml)))
	binary.LittleEndian.PutUint32(h[24:], 1)
	b := append(h, xml...)
	b = append(b, qemuMagic...)
	return append(b, make([]byte, streamBytes)...)
}

func scanRoots(t *testing.T, roots ...string) *ScanReport {
	t.Helper()
	var rs []RootSource
	for _, r := range roots {
		rs = append(rs, RootSource{Path: r, Source: "test"})
	}
	return Scan(context.Background(), rs, ScanOptions{Images: fakeImages{}})
}

func statuses(its []*Iteration) map[string]IterationStatus {
	m := map[string]IterationStatus{}
	for _, it := range its {
		m[it.VM+"/"+it.Leaf] = it.Status
	}
	return m
}

func findIteration(t *testing.T, its []*Iteration, vm, leaf string) *Iteration {
	t.Helper()
	for _, it := range its {
		if it.VM == vm && it.Leaf == leaf {
			return it
		}
	}
	t.Fatalf("iteration %s/%s not found", vm, leaf)
	return nil
}

func wantProblem(t *testing.T, it *Iteration, want string) {
	t.Helper()
	if !strings.Contains(strings.Join(it.Problems, "\n"), want) {
		t.Fatalf("%s/%s: problems %q do not mention %q", it.VM, it.Leaf, it.Problems, want)
	}
}

// startDirectory starts a directory of the test's own.
func startDirectory(t *testing.T) *ldapschema.Store {
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

// site is a directory and a backup root with one backup configuration,
// for one test.
type site struct {
	t     *testing.T
	store *ldapschema.Store
	root  string
	cfg   *ldapschema.BackupConfig
}

func newSite(t *testing.T, iterations int) *site {
	root := t.TempDir()
	return &site{t: t, store: startDirectory(t), root: root, cfg: backupConfig(root, iterations)}
}

// backup writes one iteration of vm in pool-a under the site's configuration.
func (s *site) backup(vm, leaf string, disks ...string) fakeBackup {
	return fakeBackup{root: s.root, pool: "pool-a", vm: vm, leaf: leaf, disks: disks, cfg: s.cfg}.write(s.t, s.store.Tree.Base)
}

func backupConfig(root string, iterations int) *ldapschema.BackupConfig {
	return &ldapschema.BackupConfig{RootDir: root, RetainDir: "/var/virtualization/retain", Iterations: iterations}
}

// addSaved writes a saved subtree into the directory, as it was before the loss.
func addSaved(t *testing.T, store *ldapschema.Store, f fakeBackup) {
	t.Helper()
	for _, e := range f.savedSubtree(store.Tree.Base) {
		if err := store.Add(ldapschema.AddRequestOf(e)); err != nil {
			t.Fatal(err)
		}
	}
}

func addLeaf(t *testing.T, store *ldapschema.Store, vm, leaf, mode string, rv int) {
	t.Helper()
	req := ldapschema.NewLeafAddRequest(store.Tree, vm, leaf, mode, leaf)
	req.Attributes[len(req.Attributes)-1].Vals = []string{fmt.Sprint(rv)}
	if err := store.Add(req); err != nil {
		t.Fatal(err)
	}
}

func validate(t *testing.T, store *ldapschema.Store, scan *ScanReport, recreate bool) *Plan {
	t.Helper()
	plan, err := Validate(store, scan, ValidateOptions{Recreate: func(string) bool { return recreate }})
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func vmPlan(t *testing.T, plan *Plan, vm string) *VMPlan {
	t.Helper()
	for _, p := range plan.VMs {
		if p.VM == vm {
			return p
		}
	}
	t.Fatalf("no plan for %s", vm)
	return nil
}

func blockerKinds(p *VMPlan) []BlockerKind {
	var out []BlockerKind
	for _, b := range p.Blockers {
		out = append(out, b.Kind)
	}
	return out
}
