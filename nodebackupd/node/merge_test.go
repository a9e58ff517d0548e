package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
	"github.com/stoneycloud/stoney-conductor/nodebackupd/node"
)

// A merge that lasts longer than controld's merging deadline, bandwidth-
// limited on a real VM, writes its progress to the leaf and so is not
// failed: the backup finishes with 0 and the guest reads its data.
func TestLongMergeProgressesPastItsDeadline(t *testing.T) {
	root := t.TempDir()
	slapd, store := testenv.SlapdStore(t, testenv.SlapdOptions{})
	lvd, err := testenv.StartLibvirtd(testenv.LibvirtdOptions{Dir: filepath.Join(root, "lvd")})
	if err != nil {
		t.Fatal(err)
	}
	defer lvd.Stop()
	hv, err := libvirt.Open(lvd.URI)
	if err != nil {
		t.Fatal(err)
	}
	defer hv.Close()
	dirs := map[string]string{}
	for _, d := range []string{"images/pool-a", "retain", "backup", "ramdisk"} {
		dirs[d] = filepath.Join(root, d)
		if err := os.MkdirAll(dirs[d], 0o770); err != nil {
			t.Fatal(err)
		}
	}
	disks := []testenv.DiskSpec{{Target: "vda", Path: filepath.Join(dirs["images/pool-a"], "vm-long-disk0.qcow2"), SizeMiB: 64, Pattern: 0x3e}}
	spec := testenv.VMSpec{Name: "vm-long", MemoryMiB: 64, Disks: disks, Running: true}
	if err := testenv.DefineVM(lvd.URI, spec); err != nil {
		t.Fatal(err)
	}
	defer testenv.RemoveVM(lvd.URI, spec.Name)
	cfg := testenv.LocalConfig(dirs["backup"], dirs["retain"], dirs["ramdisk"])
	cfg.BandwidthMerge = 1 // 8 MiB of data: a pull of about 8 s
	if err := testenv.VMEntries(store, "h-long", "vmpool-1", spec.Name, disks, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitGuestFilled(spec, 2*time.Minute); err != nil {
		t.Fatal(err)
	}

	log := logrus.New()
	log.SetOutput(testWriter{t})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	a := node.New(node.Options{Node: "h-long", Store: slapd.AdminStore(t), Hypervisor: hv, Log: log.WithField("side", "node"),
		StateDir: t.TempDir(), ProgressEvery: 500 * time.Millisecond})
	limits := fsm.Limits{}
	for m, d := range control.DefaultLimits {
		limits[m] = d
	}
	limits[fsm.Merging] = 3 * time.Second
	c := control.New(control.Options{Store: slapd.AdminStore(t), Log: log.WithField("side", "control"), NoLease: true, Limits: limits})
	wg.Add(2)
	go func() { defer wg.Done(); a.Run(ctx) }()
	go func() { defer wg.Done(); c.Run(ctx) }()

	_, started := control.StartBackups(store, []string{spec.Name}, time.Now())
	if len(started) != 1 || started[0].Err != nil {
		t.Fatalf("%+v", started)
	}
	dn := started[0].DN
	var merging time.Time
	var progress []string
	deadline := time.Now().Add(3 * time.Minute)
	var l ldapschema.Leaf
	for l.Mode != string(fsm.Finished) {
		if time.Now().After(deadline) {
			t.Fatalf("leaf not finished: %+v", l)
		}
		e, err := store.Get(dn, "*")
		if err == nil {
			l, _ = ldapschema.ParseLeaf(store.Tree, e)
		}
		if l.Mode == string(fsm.Merging) {
			if merging.IsZero() {
				merging = time.Now()
			}
			for _, v := range l.ExecutionTime {
				if strings.HasPrefix(v, "progress: merge") && (len(progress) == 0 || progress[len(progress)-1] != v) {
					progress = append(progress, v)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if l.ReturnValue != 0 {
		e, _ := store.Get(dn, ldapschema.AttrDescription)
		t.Fatalf("backup finished with %d: %s", l.ReturnValue, e.GetAttributeValue(ldapschema.AttrDescription))
	}
	took := time.Since(merging)
	if took < 2*limits[fsm.Merging] || len(progress) < 3 {
		t.Fatalf("merge and the rest took %v with %d progress writes %v: not a merge longer than its deadline", took, len(progress), progress)
	}
	t.Logf("merging and after: %v; progress: %s", took.Round(time.Second), strings.Join(progress, " | "))
	if err := testenv.VerifyGuestPattern(lvd.URI, lvd.LogDir, spec.Name, "vda", 0x3e, testenv.PatternOffset, testenv.PatternLength); err != nil {
		t.Fatal(err)
	}
	if info, err := format.ImageInfo(ctx, disks[0].Path); err != nil || info.BackingFile != "" {
		t.Fatalf("live disk after the backup: %+v %v", info, err)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
