package ldap_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
	"github.com/stoneycloud/stoney-conductor/nodebackupd/node"
)

// fileHypervisor stands in for libvirt: the access rules are about the
// directory, so a snapshot here only copies the disk image and writes the
// state and XML files the later steps move. Methods it does not define come
// from the nil embedded interface and would panic: a backup needs none.
type fileHypervisor struct {
	node.Hypervisor
}

func (fileHypervisor) Domain(name string) (libvirt.DomainInfo, error) {
	return libvirt.DomainInfo{Name: name, Running: true, State: "running"}, nil
}

func (fileHypervisor) Snapshot(ctx context.Context, req libvirt.SnapshotRequest) (libvirt.SnapshotResult, error) {
	res := libvirt.SnapshotResult{WasRunning: true,
		StateFile: filepath.Join(req.RetainDir.String(), req.StateName), XMLFile: filepath.Join(req.RetainDir.String(), req.XMLName)}
	if err := os.WriteFile(res.StateFile, []byte("state of "+req.Domain), 0o600); err != nil {
		return res, err
	}
	if err := os.WriteFile(res.XMLFile, []byte("<domain><name>"+req.Domain+"</name></domain>"), 0o600); err != nil {
		return res, err
	}
	for _, d := range req.Disks {
		retained := filepath.Join(req.RetainDir.String(), filepath.Base(d.Source))
		if err := copyFile(d.Source, retained); err != nil {
			return res, err
		}
		res.Disks = append(res.Disks, libvirt.RetainedDisk{Target: d.Target, Source: d.Source, Retained: retained})
	}
	return res, nil
}

// Merge has nothing to do: the live images never got a backing file.
func (fileHypervisor) Merge(ctx context.Context, req libvirt.MergeRequest) (libvirt.MergeResult, error) {
	return libvirt.MergeResult{}, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o660)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func testLog(t *testing.T, side string) logrus.FieldLogger {
	log := logrus.New()
	log.SetOutput(io.Discard)
	if testing.Verbose() {
		log.SetOutput(os.Stderr)
	}
	return log.WithField("side", side)
}

// runUntilCleanup runs fn (a daemon's Run) until the test ends.
func runUntilCleanup(t *testing.T, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fn(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitFor polls the leaf as the admin until cond holds.
func waitFor(t *testing.T, dn string, what string, cond func(e *ldapschema.Leaf, gone bool) bool) {
	t.Helper()
	st := admin(t)
	deadline := time.Now().Add(time.Minute)
	var last ldapschema.Leaf
	for time.Now().Before(deadline) {
		e, err := st.Get(dn, "*")
		if err != nil {
			if cond(nil, true) {
				return
			}
		} else if l, err := ldapschema.ParseLeaf(env.tree, e); err == nil {
			last = l
			if cond(&l, false) {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not %s within a minute; last seen %+v", dn, what, last)
}

// Both daemons, bound with their own accounts under the shipped access rules,
// carry backups on two hosts through to finished, and a retention delete
// through to the leaf's removal.
func TestDaemonsUnderAccessRules(t *testing.T) {
	hosts := []string{vmName("kvm"), vmName("kvm")} // new accounts each run
	for _, h := range hosts {
		if err := addNodeAccount(h); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	images := filepath.Join(dir, "virtualization", "vm-persistent", "pool-a")
	retain := filepath.Join(dir, "virtualization", "retain")
	backup := filepath.Join(dir, "backup")
	ramdisk := filepath.Join(dir, "ramdisk")
	for _, d := range []string{images, retain, backup, ramdisk} {
		if err := os.MkdirAll(d, 0o770); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testenv.LocalConfig(backup, retain, ramdisk)
	var vms []string
	for _, h := range hosts {
		vm := vmName("daemon")
		img := filepath.Join(images, vm+"-vda.qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "1M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
		if err := testenv.VMEntries(admin(t), h, "pool-a", vm, []testenv.DiskSpec{{Target: "vda", Path: img}}, &cfg); err != nil {
			t.Fatal(err)
		}
		vms = append(vms, vm)
	}

	for _, h := range hosts {
		a := node.New(node.Options{Node: h, Store: bind(t, nodeDN(h)), Hypervisor: fileHypervisor{}, Log: testLog(t, h), StateDir: t.TempDir()})
		runUntilCleanup(t, a.Run)
	}
	c := control.New(control.Options{Store: bind(t, controldDN), Log: testLog(t, "control")})
	runUntilCleanup(t, c.Run)

	// As `controld backup` does, with controld's account.
	name, started := control.StartBackups(bind(t, controldDN), vms, time.Now())
	for _, s := range started {
		if s.Err != nil {
			t.Fatalf("start backup of %s: %v", s.VM, s.Err)
		}
	}
	for i, s := range started {
		waitFor(t, s.DN, "finished", func(l *ldapschema.Leaf, gone bool) bool {
			return l != nil && l.Mode == "finished"
		})
		if rv := attr(t, s.DN, ldapschema.AttrReturnValue); rv != "0" {
			t.Fatalf("%s finished with return value %s", s.VM, rv)
		}
		files := filepath.Join(backup, "vm-persistent", "pool-a", vms[i], name)
		for _, f := range []string{vms[i] + ".state", vms[i] + ".xml", vms[i] + ".ldif", vms[i] + "-vda.qcow2"} {
			if _, err := os.Stat(filepath.Join(files, f+"."+name)); err != nil {
				t.Errorf("backup file: %v", err)
			}
		}
	}

	// Retention: controld requests the delete; the node removes the files,
	// controld then the leaf.
	ctl := bind(t, controldDN)
	for _, s := range started {
		if err := ctl.ChangeMode(ldapschema.ModeChange{DN: s.DN, From: "finished", To: "delete", State: "0"}); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range started {
		waitFor(t, s.DN, "removed", func(l *ldapschema.Leaf, gone bool) bool { return gone })
		if _, err := os.Stat(filepath.Join(backup, "vm-persistent", "pool-a", vms[i], name)); !os.IsNotExist(err) {
			t.Errorf("backup of %s still there after the delete (%v)", vms[i], err)
		}
	}
}
