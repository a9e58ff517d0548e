package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
	"github.com/stoneycloud/stoney-conductor/nodebackupd/node"
)

// One slapd and one libvirtd for the whole package: a cold libvirtd costs seconds.
var env struct {
	root  string
	slapd *testenv.Slapd
	lv    *testenv.Libvirtd
	hv    *libvirt.Hypervisor
	small string // a small tmpfs, for "no room for the state file"
}

const smallFS = 40 << 20

func TestMain(m *testing.M) {
	testenv.Main(m, "stoney-e2e-", func(sh *testenv.Shared) error {
		env.root = sh.Root
		// Mounted before libvirtd starts, so QEMU sees it too.
		env.small = filepath.Join(sh.Root, "small")
		if err := sh.MountTmpfs(env.small, smallFS); err != nil {
			return err
		}
		var err error
		if env.slapd, err = sh.StartSlapd(testenv.SlapdOptions{}); err != nil {
			return err
		}
		if env.lv, err = sh.StartLibvirtd(testenv.LibvirtdOptions{}); err != nil {
			return err
		}
		if env.hv, err = libvirt.Open(env.lv.URI); err != nil {
			return fmt.Errorf("libvirt: %w", err)
		}
		sh.Cleanup(func() { env.hv.Close() })
		return nil
	})
}

var seq atomic.Int64

// unique returns a name no other test uses (VM names, node names).
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid()%1000, seq.Add(1))
}

func newStore(t testing.TB) *ldapschema.Store {
	t.Helper()
	return env.slapd.AdminStore(t)
}

func quietLog(t testing.TB) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(testWriter{t})
	log.SetLevel(logrus.InfoLevel)
	return log
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// startNode runs a node agent for host until the test ends.
func startNode(t testing.TB, host string, hv node.Hypervisor) *node.Agent {
	t.Helper()
	return startNodeWith(t, node.Options{Node: host, Hypervisor: hv})
}

// startNodeWith is startNode with options; the store, log and state
// directory are the test's.
func startNodeWith(t testing.TB, o node.Options) *node.Agent {
	t.Helper()
	o.Store, o.Log, o.StateDir = newStore(t), quietLog(t).WithField("side", "node"), t.TempDir()
	a := node.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// startControl runs a controller until the test ends.
func startControl(t testing.TB) *control.Controller {
	t.Helper()
	c := control.New(control.Options{Store: newStore(t), Log: quietLog(t).WithField("side", "control")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// site is one test's world: its host name, its directories, its VMs.
type site struct {
	t                               testing.TB
	host                            string
	images, retain, backup, ramdisk string
	store                           *ldapschema.Store
}

// newSite makes the directories (images and retain on one file system, as the
// seed requires) under base.
func newSite(t testing.TB, base string) *site {
	t.Helper()
	s := &site{t: t, host: unique("host"), store: newStore(t)}
	dir, err := os.MkdirTemp(base, "site-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s.images = filepath.Join(dir, "images", "pool-a")
	s.retain = filepath.Join(dir, "retain")
	s.backup = filepath.Join(dir, "backup")
	s.ramdisk = filepath.Join(dir, "ramdisk")
	for _, d := range []string{s.images, s.retain, s.backup, s.ramdisk} {
		if err := os.MkdirAll(d, 0o770); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// config is the site's backup configuration.
func (s *site) config() ldapschema.BackupConfig {
	return testenv.LocalConfig(s.backup, s.retain, s.ramdisk)
}

// vm is a test VM: a libvirt domain and its directory entries.
type vm struct {
	name  string
	spec  testenv.VMSpec
	disks []testenv.DiskSpec
}

// addVM defines a domain with the given disks (pattern per disk) and the matching
// directory entries, with the site's backup config on the VM.
func (s *site) addVM(running bool, memMiB int, patterns ...byte) *vm {
	s.t.Helper()
	name := unique("vm")
	var disks []testenv.DiskSpec
	for i, p := range patterns {
		disks = append(disks, testenv.DiskSpec{
			Target: fmt.Sprintf("vd%c", 'a'+i), Path: filepath.Join(s.images, fmt.Sprintf("%s-disk%d.qcow2", name, i)),
			SizeMiB: 64, Pattern: p,
		})
	}
	spec := testenv.VMSpec{Name: name, MemoryMiB: memMiB, Disks: disks, Running: running}
	if err := testenv.DefineVM(env.lv.URI, spec); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { testenv.RemoveVM(env.lv.URI, name) })
	s.addEntries(name, disks, s.config())
	return &vm{name: name, spec: spec, disks: disks}
}

func (s *site) addEntries(name string, disks []testenv.DiskSpec, cfg ldapschema.BackupConfig) {
	s.t.Helper()
	if err := testenv.VMEntries(s.store, s.host, "vmpool-1", name, disks, &cfg); err != nil {
		s.t.Fatal(err)
	}
}

// waitLeaf polls the leaf until cond holds; the limit only guards against a hang.
func waitLeaf(t testing.TB, store *ldapschema.Store, dn string, limit time.Duration, cond func(ldapschema.Leaf) bool) ldapschema.Leaf {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last ldapschema.Leaf
	for time.Now().Before(deadline) {
		e, err := store.Get(dn, "*")
		if err == nil {
			if l, err := ldapschema.ParseLeaf(store.Tree, e); err == nil {
				last = l
				if cond(l) {
					return l
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("leaf %s: condition not reached within %v; last seen %+v", dn, limit, last)
	return last
}

func modeIs(m string) func(ldapschema.Leaf) bool {
	return func(l ldapschema.Leaf) bool { return l.Mode == m }
}

// guestReads checks, through QEMU's view of the running guest's disk, that the
// pattern written at creation is still there.
func (v *vm) guestReads(t testing.TB, target string, pattern byte) {
	t.Helper()
	if err := testenv.VerifyGuestPattern(env.lv.URI, env.lv.LogDir, v.name, target, pattern, testenv.PatternOffset, testenv.PatternLength); err != nil {
		t.Fatalf("%s %s: guest does not read its data: %v", v.name, target, err)
	}
}

func (v *vm) running(t testing.TB) bool {
	t.Helper()
	info, err := env.hv.Domain(v.name)
	if err != nil {
		t.Fatal(err)
	}
	return info.Running
}

// noBacking checks that a live image depends on nothing.
func noBacking(t testing.TB, path string) {
	t.Helper()
	info, err := format.ImageInfo(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if info.BackingFile != "" {
		t.Fatalf("%s still has backing file %s", path, info.BackingFile)
	}
}
