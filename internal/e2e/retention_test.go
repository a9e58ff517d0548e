package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
)

// With three iterations configured, the fourth backup leaves three leaves and
// three directories of files: the real node removes the oldest one's files,
// controld its leaf.
func TestRetentionWithRealNode(t *testing.T) {
	s := newSite(t, env.root)
	v := s.addVM(false, 64, 0xab)
	s.keepIterations(v, 3)
	_, stop := startNightlyControl(t)
	defer stop()
	startNode(t, s.host, env.hv)

	base := time.Date(2024, 1, 1, 3, 0, 0, 0, time.UTC)
	var names []string
	for i := 0; i < 4; i++ {
		l := s.backedUp(t, v, base.Add(time.Duration(i)*24*time.Hour))
		names = append(names, l.Name)
	}
	vmDir := filepath.Join(s.backup, "vm-persistent", "pool-a", v.name)
	deadline := time.Now().Add(leafLimit)
	for {
		leaves, err := control.Leaves(s.store, v.name)
		if err != nil {
			t.Fatal(err)
		}
		dirs, _ := os.ReadDir(vmDir)
		if len(leaves) == 3 && len(dirs) == 3 {
			for _, l := range leaves {
				if l.Name == names[0] {
					t.Fatalf("the oldest leaf %s was kept", l.Name)
				}
			}
			if _, err := os.Stat(filepath.Join(vmDir, names[0])); !os.IsNotExist(err) {
				t.Fatalf("the oldest backup's files are still there: %v", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d leaves and %d directories, want 3 and 3", len(leaves), len(dirs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
