package recovery

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/format"
)

// TestScanFakeTree: every way an iteration can be broken is reported with
// its reason, each alone, and the scan goes on to find the rest; what is not
// a backup at all is listed as a stray.
func TestScanFakeTree(t *testing.T) {
	root := t.TempDir()
	const base = "o=elsewhere,c=ch" // the saved LDIF's base need not be ours
	ok := fakeBackup{root: root, pool: "pool-a", vm: "vm-ok", leaf: "20240101T030000Z", disks: []string{"vda", "vdb"}, running: true}.write(t, base)
	fakeBackup{root: root, pool: "pool-a", vm: "vm-off", leaf: "20240101T030000Z", disks: []string{"vda"}}.write(t, base)

	broken := []struct {
		name, leaf string
		breakIt    func(f fakeBackup) string // returns what the report must say
	}{
		{"missing XML", "20240102T030000Z", func(f fakeBackup) string {
			os.Remove(f.file(f.vm + ".xml"))
			return f.vm + ".xml.20240102T030000Z is missing"
		}},
		{"corrupt image", "20240103T030000Z", func(f fakeBackup) string {
			os.WriteFile(f.file(filepath.Base(f.image("vda"))), []byte("bad image"), 0o640)
			return "disk vda"
		}},
		{"missing image", "20240104T030000Z", func(f fakeBackup) string {
			os.Remove(f.file(filepath.Base(f.image("vda"))))
			return "vm-b-vda.qcow2.20240104T030000Z is missing"
		}},
		{"save image cut short", "20240105T030000Z", func(f fakeBackup) string {
			b := saveImage(f.vm, 4096)
			os.WriteFile(f.file(f.vm+".state"), b[:saveHeader+10], 0o640)
			return "saved state cut short"
		}},
		{"state is neither", "20240106T030000Z", func(f fakeBackup) string {
			os.WriteFile(f.file(f.vm+".state"), []byte("garbage"), 0o640)
			return "neither a saved VM state nor the placeholder"
		}},
		{"XML of another VM", "20240107T030000Z", func(f fakeBackup) string {
			os.WriteFile(f.file(f.vm+".xml"), []byte("<domain><name>other</name></domain>"), 0o640)
			return `names domain "other"`
		}},
		{"LDIF beyond the VM", "20240108T030000Z", func(f fakeBackup) string {
			b, _ := os.ReadFile(f.file(f.vm + ".ldif"))
			b = append(b, []byte("\ndn: ou=backup,ou=configuration,ou=virtualization,ou=services,"+base+"\nou: backup\n")...)
			os.WriteFile(f.file(f.vm+".ldif"), b, 0o640)
			return "is not part of VM vm-b"
		}},
		{"LDIF that does not parse", "20240109T030000Z", func(f fakeBackup) string {
			os.WriteFile(f.file(f.vm+".ldif"), []byte("dn: x\n continuation\nnot ldif"), 0o640)
			return "LDIF line"
		}},
	}
	for _, b := range broken {
		f := fakeBackup{root: root, pool: "pool-b", vm: "vm-b", leaf: b.leaf, disks: []string{"vda"}, running: true}.write(t, base)
		want := b.breakIt(f)
		t.Run(b.name, func(t *testing.T) {
			s := scanRoots(t, root)
			it := findIteration(t, s.Iterations, "vm-b", b.leaf)
			if it.Status != StatusBroken {
				t.Fatalf("status %s, want broken", it.Status)
			}
			wantProblem(t, it, want)
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
	// The root's chunk store is no stray.
	mustWrite(filepath.Join(root, format.ChunkStoreDir, "0a1b", "0a1b2c"), "a chunk")

	s := Scan(context.Background(), []RootSource{
		{Path: root, Source: "test"}, {Path: root + "/", Source: "again"}, {Path: filepath.Join(root, "nope"), Source: "test"},
	}, ScanOptions{Images: fakeImages{}})

	if len(s.Roots) != 2 || s.Roots[0].Error != "" || s.Roots[1].Error == "" {
		t.Fatalf("roots %+v: want the root once and the missing one with an error", s.Roots)
	}
	got := statuses(s.Iterations)
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

	it := findIteration(t, s.Iterations, "vm-ok", ok.leaf)
	if it.State != "saved" || it.Node != "kvm-01" || it.VMPool != "vmpool-1" || len(it.Disks) != 2 || it.Bytes == 0 {
		t.Fatalf("complete iteration read as %+v", it)
	}
	if it.Disks[0].Target != "vda" || it.Disks[0].File != "vm-ok-vda.qcow2."+ok.leaf {
		t.Fatalf("disks %+v", it.Disks)
	}
	if len(it.Notes) != 1 || !strings.Contains(it.Notes[0], ".tmp") {
		t.Fatalf("the partial copy beside the files is not noted: %q", it.Notes)
	}
	if off := findIteration(t, s.Iterations, "vm-off", "20240101T030000Z"); off.State != "placeholder" {
		t.Fatalf("shut-off VM's state read as %q", off.State)
	}
}
