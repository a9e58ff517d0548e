package recovery

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// TestImportRollsBack: a VM whose entries the directory refuses midway is
// removed again entirely; the other VMs are imported.
func TestImportRollsBack(t *testing.T) {
	s := newSite(t, 2)
	store, tree, root := s.store, s.store.Tree, s.root
	s.backup("vm-good", "20240101T030000Z", "vda")
	bad := s.backup("vm-bad", "20240101T030000Z", "vda", "vdb")
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

	plan := validate(t, store, scanRoots(t, root), true)
	if len(plan.Containers) != 1 || plan.Containers[0] != tree.VirtualMachines() {
		t.Fatalf("containers to create: %q", plan.Containers)
	}
	results, err := Import(store, plan, time.Now())
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
