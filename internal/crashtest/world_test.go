package crashtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// host is the sstNode of every test VM: one nodebackupd works for it.
const host = "crash-node"

// world is everything one run shares: one slapd, one libvirtd, the two
// daemons, the configured directories and the VMs.
type world struct {
	root                                   string
	bin                                    string
	slapd                                  *testenv.Slapd
	lv                                     *testenv.Libvirtd
	lvUp                                   bool // false between a kill and its restart
	hv                                     *libvirt.Hypervisor
	store                                  *ldapschema.Store
	images, retain, backup, ramdisk, saved string
	ctl, node                              *daemon
	tune                                   tuning
	header                                 []string

	mu       sync.Mutex
	vms      []*testVM // every VM created, abandoned ones included
	lastLeaf time.Time
	seq      int
}

func setup(t *testing.T) (*world, func()) {
	t.Helper()
	return startWorld(t, true)
}

// startWorld starts slapd and libvirtd with the configured directories and,
// when daemons is set, builds and starts controld and nodebackupd as well;
// without them a harness drives the node in-process (see op_test.go).
func startWorld(t *testing.T, daemons bool) (*world, func()) {
	t.Helper()
	root, err := os.MkdirTemp("", "stoney-crash-")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{root: root, bin: filepath.Join(root, "bin")}
	var undo []func()
	teardown := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		if os.Getenv("CRASHTEST_KEEP") != "" {
			fmt.Println("crashtest: kept", root)
			return
		}
		os.RemoveAll(root)
	}
	fail := func(format string, a ...any) {
		teardown()
		t.Fatalf(format, a...)
	}
	w.images = filepath.Join(root, "images", "pool-a")
	w.retain = filepath.Join(root, "retain")
	w.backup = filepath.Join(root, "backup")
	w.ramdisk = filepath.Join(root, "ramdisk")
	w.saved = filepath.Join(root, "saved")
	for _, d := range []string{w.images, w.retain, w.backup, w.ramdisk, w.saved, w.bin, filepath.Join(root, "logs")} {
		if err := os.MkdirAll(d, 0o770); err != nil {
			fail("%v", err)
		}
	}

	// Building and starting the servers overlap: a cold libvirtd costs seconds.
	start := time.Now()
	built := make(chan error, 1)
	if daemons {
		go func() { built <- buildDaemons(w.bin) }()
	} else {
		built <- nil
	}
	w.slapd, err = testenv.StartSlapd(testenv.SlapdOptions{Dir: filepath.Join(root, "slapd"), NoSync: true})
	if err != nil {
		<-built
		fail("slapd: %v", err)
	}
	undo = append(undo, func() { w.slapd.Stop() })
	w.lv, err = testenv.StartLibvirtd(testenv.LibvirtdOptions{Dir: filepath.Join(root, "lv")})
	if err != nil {
		<-built
		fail("libvirtd: %v", err)
	}
	w.lvUp = true
	undo = append(undo, func() { w.lv.Stop() })
	servers := time.Since(start)
	if err := <-built; err != nil {
		fail("%v", err)
	}
	if daemons {
		w.header = append(w.header, fmt.Sprintf("built controld and nodebackupd, started slapd and libvirtd in %.1fs (servers %.1fs)",
			time.Since(start).Seconds(), servers.Seconds()))
	} else {
		w.header = append(w.header, fmt.Sprintf("started slapd and libvirtd in %.1fs", servers.Seconds()))
	}

	if w.hv, err = libvirt.Open(w.lv.URI); err != nil {
		fail("libvirt: %v", err)
	}
	undo = append(undo, func() { w.hv.Close() })
	w.store, err = ldapschema.Dial(ldapschema.StoreOptions{URL: w.slapd.URL, BindDN: w.slapd.AdminDN, Password: w.slapd.AdminPassword, Base: w.slapd.Base})
	if err != nil {
		fail("directory: %v", err)
	}
	undo = append(undo, func() { w.store.Close() })
	undo = append(undo, func() {
		for _, v := range w.allVMs() {
			_ = testenv.RemoveVM(w.lv.URI, v.name)
		}
	})

	if !daemons {
		return w, teardown
	}
	if err := w.configure(); err != nil {
		fail("%v", err)
	}
	if err := w.ctl.start(); err != nil {
		fail("%v", err)
	}
	undo = append(undo, w.ctl.stop)
	if err := w.node.start(); err != nil {
		fail("%v", err)
	}
	undo = append(undo, w.node.stop)
	return w, teardown
}

// configure writes both daemons' YAML with the tuning keys they accept.
func (w *world) configure() error {
	pw := filepath.Join(w.root, "ldap.secret")
	if err := os.WriteFile(pw, []byte(w.slapd.AdminPassword+"\n"), 0o600); err != nil {
		return err
	}
	logs := filepath.Join(w.root, "logs")
	ctlBin, nodeBin := filepath.Join(w.bin, "controld"), filepath.Join(w.bin, "nodebackupd")
	probeLDAP := ldapYAML("ldap://127.0.0.1:1", w.slapd.AdminDN, pw, w.slapd.Base)
	nodeRest := fmt.Sprintf("node: %s\nlibvirt:\n  uri: %s\nstateDir: %s\n", host, w.lv.URI, filepath.Join(w.root, "node-state"))
	var refusedCtl, refusedNode []string
	w.tune.ctl, w.tune.ctlLines, refusedCtl = probeTuning(w.root, ctlBin, []string{"agent"}, probeLDAP, controldTuning)
	w.tune.node, w.tune.nodeLns, refusedNode = probeTuning(w.root, nodeBin, nil, probeLDAP+nodeRest, nodeTuning)

	ldapCfg := ldapYAML(w.slapd.URL, w.slapd.AdminDN, pw, w.slapd.Base) + "log:\n  level: info\n"
	ctlCfg, nodeCfg := filepath.Join(w.root, "controld.yaml"), filepath.Join(w.root, "nodebackupd.yaml")
	if err := os.WriteFile(ctlCfg, []byte(ldapCfg+joinYAML(w.tune.ctl)), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(nodeCfg, []byte(ldapCfg+nodeRest+joinYAML(w.tune.node)), 0o600); err != nil {
		return err
	}
	w.ctl = newDaemon("controld", ctlBin, filepath.Join(logs, "controld.log"), "agent", "-config", ctlCfg)
	w.node = newDaemon("nodebackupd", nodeBin, filepath.Join(logs, "nodebackupd.log"), "-config", nodeCfg)

	show := func(who string, acc []string, ref []string) {
		line := who + " config: "
		if len(acc) == 0 {
			line += "no tuning key accepted"
		} else {
			line += strings.Join(acc, ", ")
		}
		if len(ref) > 0 {
			line += "; refused: " + strings.Join(ref, "; ")
		}
		w.header = append(w.header, line)
	}
	show("controld", w.tune.ctlLines, refusedCtl)
	show("nodebackupd", w.tune.nodeLns, refusedNode)
	return nil
}

// testVM is a VM of the run and what its guest must read.
type testVM struct {
	name      string
	spec      testenv.VMSpec
	disks     []testenv.DiskSpec
	running   bool
	reads     map[string]byte   // target → pattern the guest must read now
	saved     map[string]string // disk path → copy of the image as created
	steady    byte              // written at steadyOffset after the copy; 0: nothing
	abandoned bool              // given up after a failed point; no longer checked
}

func (w *world) allVMs() []*testVM {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*testVM(nil), w.vms...)
}

// newVM defines and starts a 64 MiB VM with one 64 MiB disk per pattern, its
// directory entries with a backup configuration on the VM, and keeps a copy
// of each disk as created.
func (w *world) newVM(prefix string, patterns ...byte) (*testVM, error) {
	return w.makeVM(vmShape{prefix: prefix, memMiB: 64, diskMiB: 64}, patterns...)
}

// vmShape is what makeVM builds: a smaller guest makes a smaller saved state.
type vmShape struct {
	prefix          string
	memMiB, diskMiB int
	shutOff         bool // defined but never started
}

// makeVM is newVM for a VM of the given shape.
func (w *world) makeVM(shape vmShape, patterns ...byte) (*testVM, error) {
	prefix := shape.prefix
	w.mu.Lock()
	w.seq++
	name := fmt.Sprintf("crash-%s%d", prefix, w.seq)
	w.mu.Unlock()
	v := &testVM{name: name, running: !shape.shutOff, reads: map[string]byte{}, saved: map[string]string{}}
	for i, p := range patterns {
		target := fmt.Sprintf("vd%c", 'a'+i)
		v.disks = append(v.disks, testenv.DiskSpec{
			Target: target, Path: filepath.Join(w.images, fmt.Sprintf("%s-%s.qcow2", name, target)), SizeMiB: shape.diskMiB, Pattern: p,
		})
		v.reads[target] = p
	}
	v.spec = testenv.VMSpec{Name: name, MemoryMiB: shape.memMiB, Disks: v.disks, Running: v.running}
	if err := testenv.DefineVM(w.lv.URI, v.spec); err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.vms = append(w.vms, v)
	w.mu.Unlock()
	cfg := testenv.LocalConfig(w.backup, w.retain, w.ramdisk)
	cfg.Iterations = 1000 // retention stays out of the way
	if err := testenv.VMEntries(w.store, host, "vmpool-1", name, v.disks, &cfg); err != nil {
		return nil, err
	}
	if v.running {
		if err := testenv.WaitGuestFilled(v.spec, 2*time.Minute); err != nil {
			return nil, err
		}
	}
	for _, d := range v.disks {
		dst := filepath.Join(w.saved, filepath.Base(d.Path))
		if out, err := exec.Command("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", d.Path, dst).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("copy %s: %v: %s", d.Path, err, out)
		}
		v.saved[d.Path] = dst
	}
	return v, nil
}

// abandon gives up a VM a failed point left in doubt: its directory entries
// go (so neither daemon acts on it any more) and its domain is undefined.
// Its files stay, out of later scans.
func (w *world) abandon(v *testVM) {
	if v == nil || v.abandoned {
		return
	}
	v.abandoned = true
	if entries, err := w.store.SubtreeEntries(w.store.Tree.VM(v.name)); err == nil {
		sort.Slice(entries, func(i, k int) bool {
			return strings.Count(entries[i].DN, ",") > strings.Count(entries[k].DN, ",")
		})
		for _, e := range entries {
			_ = w.store.Delete(e.DN)
		}
	}
	_ = testenv.RemoveVM(w.lv.URI, v.name)
}

// leafName returns a leaf name (a UTC second) not used before in this run.
func (w *world) leafName() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now().UTC().Truncate(time.Second)
	if !now.After(w.lastLeaf) {
		now = w.lastLeaf.Add(time.Second)
	}
	w.lastLeaf = now
	return now
}

// cleanBackup backs v up with nothing crashing, for the restore and delete
// points that need a good backup to start from.
func (w *world) cleanBackup(v *testVM) (string, error) {
	at := w.leafName()
	dn := w.store.Tree.Leaf(v.name, fsm.FormatTime(at))
	mon, err := watchLeaf(w.store, v.name, dn)
	if err != nil {
		return "", err
	}
	defer mon.stop()
	_, started := control.StartBackups(w.store, []string{v.name}, at)
	if started[0].Err != nil {
		return "", started[0].Err
	}
	st, ok := mon.waitFor(hangGuard, finishedOrGone)
	if !ok {
		return "", fmt.Errorf("backup %s stuck in %s after %v: %s", fsm.FormatTime(at), st.mode(), hangGuard, mon.history())
	}
	if st.gone || st.leaf.ReturnValue != 0 {
		return "", fmt.Errorf("backup %s ended %s rv=%d: %s", fsm.FormatTime(at), st.mode(), st.leaf.ReturnValue, mon.history())
	}
	return st.leaf.Name, nil
}

// operatorWrite sets a leaf's mode (and State 0 for a request) with the real
// ldapmodify, as the web UI does.
func (w *world) operatorWrite(dn, mode, state string) error {
	return w.slapd.LDAPModify("dn: " + dn + "\nchangetype: modify\nreplace: sstProvisioningState\nsstProvisioningState: " + state +
		"\n-\nreplace: sstProvisioningMode\nsstProvisioningMode: " + mode + "\n")
}

// restartLibvirtd starts libvirtd again after a kill, and the harness's own
// connection with it: the old one died with the daemon.
func (w *world) restartLibvirtd() error {
	err := w.lv.Restart()
	w.lvUp = err == nil
	if err != nil {
		return err
	}
	hv, err := libvirt.Open(w.lv.URI)
	if err != nil {
		return err
	}
	old := w.hv
	w.hv = hv
	return old.Close()
}

// ensureUp restarts whatever a failed point left down, so the next point
// starts from a working system.
func (w *world) ensureUp() error {
	var errs []error
	if !w.slapd.Running() {
		if err := w.slapd.Restart(); err != nil {
			errs = append(errs, fmt.Errorf("slapd: %w", err))
		}
	}
	if !w.lvUp {
		if err := w.restartLibvirtd(); err != nil {
			errs = append(errs, fmt.Errorf("libvirtd: %w", err))
		}
	}
	for _, d := range []*daemon{w.ctl, w.node} {
		if !d.running() {
			if err := d.start(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
