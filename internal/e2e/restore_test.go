package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// backedUp backs up v through controld and nodebackupd and returns the leaf.
func (s *site) backedUp(t *testing.T, v *vm, at time.Time) ldapschema.Leaf {
	t.Helper()
	_, started := control.StartBackups(s.store, []string{v.name}, at)
	if started[0].Err != nil {
		t.Fatal(started[0].Err)
	}
	l := waitLeaf(t, s.store, started[0].DN, leafLimit, modeIs("finished"))
	if l.ReturnValue != 0 {
		t.Fatalf("backup of %s: return value %d", v.name, l.ReturnValue)
	}
	return l
}

// changedSinceBackup is a site with both daemons and a running VM backed up
// once (pattern 0xab), whose guest has since written pattern to vda.
func changedSinceBackup(t *testing.T, pattern byte) (*site, *vm, ldapschema.Leaf) {
	t.Helper()
	s := newSite(t, env.root)
	v := s.addVM(true, 64, 0xab)
	startControl(t)
	startNode(t, s.host, env.hv)
	l := s.backedUp(t, v, time.Now())
	if err := writeGuest(v, "vda", pattern); err != nil {
		t.Fatal(err)
	}
	return s, v, l
}

// boots counts how often the guest booted: it prints FILLED once per boot.
func (v *vm) boots(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(v.spec.SerialPath())
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("FILLED"))
}

func (s *site) displayName(t *testing.T, vmName string) string {
	t.Helper()
	e, err := s.store.Get(s.store.Tree.VM(vmName), ldapschema.AttrDisplayName)
	if err != nil {
		t.Fatal(err)
	}
	return e.GetAttributeValue(ldapschema.AttrDisplayName)
}

// webUIRestore replays what the web UI writes, with ldapmodify, and its check of
// the unretained LDIF; goOn false cancels after the small files.
func (s *site) webUIRestore(t *testing.T, v *vm, l ldapschema.Leaf, goOn bool) ldapschema.Leaf {
	t.Helper()
	modify := func(mode string) {
		t.Helper()
		if err := env.slapd.LDAPModify("dn: " + l.DN + `
changetype: modify
replace: sstProvisioningState
sstProvisioningState: 0
-
replace: sstProvisioningMode
sstProvisioningMode: ` + mode + "\n"); err != nil {
			t.Fatal(err)
		}
	}
	modify("unretainSmallFiles")
	got := waitLeaf(t, s.store, l.DN, leafLimit, modeIs("unretainedSmallFiles"))
	if got.ReturnValue != 0 {
		t.Fatalf("unretainSmallFiles: return value %d", got.ReturnValue)
	}
	// The web UI's check: the LDIF at exactly this path, then its copy to <vm>.ldif.
	dir := filepath.Join(s.retain, "vm-persistent", "pool-a", v.name, l.Name)
	ldif := filepath.Join(dir, v.name+".ldif."+l.Name)
	b, err := os.ReadFile(ldif)
	if err != nil {
		t.Fatalf("the web UI would not find the unretained LDIF: %v", err)
	}
	if !goOn {
		modify("finished")
		return waitLeaf(t, s.store, l.DN, leafLimit, modeIs("finished"))
	}
	if err := os.WriteFile(filepath.Join(dir, v.name+".ldif"), b, 0o640); err != nil {
		t.Fatal(err)
	}
	modify("unretainLargeFiles")
	return waitLeaf(t, s.store, l.DN, leafLimit, modeIs("finished"))
}

// TestRestoreRunningVM: back up, write new data and change the directory entry,
// restore through the web UI's own sequence: the guest reads the old data, its
// RAM state resumes (no reboot), the entry is as it was.
func TestRestoreRunningVM(t *testing.T) {
	s := newSite(t, env.root)
	v := s.addVM(true, 64, 0xab)
	if err := waitFilled(v); err != nil {
		t.Fatal(err)
	}
	startControl(t)
	startNode(t, s.host, env.hv)
	l := s.backedUp(t, v, time.Now())
	before := s.displayName(t, v.name)

	if err := writeGuest(v, "vda", 0x11); err != nil {
		t.Fatal(err)
	}
	v.guestReads(t, "vda", 0x11)
	if err := s.store.Update(s.store.Tree.VM(v.name), "", map[string][]string{ldapschema.AttrDisplayName: {"renamed since"}}); err != nil {
		t.Fatal(err)
	}
	bootsBefore := v.boots(t)

	// The differences are published before the point of no return.
	dn := l.DN
	if err := env.slapd.LDAPModify("dn: " + dn + "\nchangetype: modify\nreplace: sstProvisioningState\nsstProvisioningState: 0\n-\nreplace: sstProvisioningMode\nsstProvisioningMode: unretainSmallFiles\n"); err != nil {
		t.Fatal(err)
	}
	waitLeaf(t, s.store, dn, leafLimit, modeIs("unretainedSmallFiles"))
	e, err := s.store.Get(dn, "*")
	if err != nil {
		t.Fatal(err)
	}
	diff := strings.Join(ldapschema.ParseRestoreDiff(e.GetAttributeValues(ldapschema.AttrDescription)), "\n")
	if !strings.Contains(diff, "sstDisplayName") || !strings.Contains(diff, "renamed since") {
		t.Fatalf("published differences do not name the changed display name:\n%s", diff)
	}
	v.guestReads(t, "vda", 0x11) // nothing touched yet
	if err := control.CancelRestore(s.store, dn, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitLeaf(t, s.store, dn, leafLimit, modeIs("finished"))

	got := s.webUIRestore(t, v, l, true)
	if got.ReturnValue != 0 {
		t.Fatalf("restore: return value %d", got.ReturnValue)
	}
	if !v.running(t) {
		t.Fatal("restored VM is not running")
	}
	v.guestReads(t, "vda", 0xab)
	if n := v.boots(t); n != bootsBefore {
		t.Fatalf("the guest booted again (%d boots, was %d): its RAM state was not resumed", n, bootsBefore)
	}
	if name := s.displayName(t, v.name); name != before {
		t.Fatalf("display name %q after the restore, want %q", name, before)
	}
	noPreRestore(t, v)
	if _, err := os.Stat(filepath.Join(s.retain, "vm-persistent", "pool-a", v.name, l.Name)); !os.IsNotExist(err) {
		t.Fatalf("retain directory left behind: %v", err)
	}
}

func noPreRestore(t *testing.T, v *vm) {
	t.Helper()
	for _, d := range v.disks {
		if _, err := os.Stat(d.Path + ".pre-restore"); !os.IsNotExist(err) {
			t.Fatalf("%s.pre-restore left behind", d.Path)
		}
	}
}

// TestRestoreCancel: cancelling after the small files leaves the VM and its
// files exactly as they were, and nothing in the retain directory.
func TestRestoreCancel(t *testing.T) {
	s, v, l := changedSinceBackup(t, 0x22)
	backupDir := filepath.Join(s.backup, "vm-persistent", "pool-a", v.name, l.Name)
	filesBefore := listDir(t, backupDir)
	got := s.webUIRestore(t, v, l, false)
	if got.ReturnValue != 0 {
		t.Fatalf("cancelled restore: return value %d", got.ReturnValue)
	}
	v.guestReads(t, "vda", 0x22)
	if !v.running(t) {
		t.Fatal("VM stopped by a cancelled restore")
	}
	noBacking(t, v.disks[0].Path)
	if after := listDir(t, backupDir); after != filesBefore {
		t.Fatalf("backup directory changed:\n%s\n%s", filesBefore, after)
	}
	retainLeaf := filepath.Join(s.retain, "vm-persistent", "pool-a", v.name, l.Name)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(retainLeaf); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cancelled restore's files stay in the retain directory")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The backup can still be restored afterwards.
	if got := s.webUIRestore(t, v, l, true); got.ReturnValue != 0 {
		t.Fatalf("restore after a cancel: return value %d", got.ReturnValue)
	}
	v.guestReads(t, "vda", 0xab)
}

func listDir(t *testing.T, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range es {
		fi, _ := e.Info()
		b.WriteString(e.Name())
		b.WriteString(" ")
		b.WriteString(fi.ModTime().String())
		b.WriteString("\n")
	}
	return b.String()
}

// TestRestoreTwoDisksAndShutOff: both disks of a two-disk VM come back; a VM
// that was shut off at backup time is restored shut off.
func TestRestoreTwoDisksAndShutOff(t *testing.T) {
	s := newSite(t, env.root)
	two := s.addVM(true, 64, 0xcd, 0xce)
	off := s.addVM(false, 64, 0xef)
	startControl(t)
	startNode(t, s.host, env.hv)
	l2 := s.backedUp(t, two, time.Now())
	lo := s.backedUp(t, off, time.Now())
	if err := writeGuest(two, "vda", 0x31); err != nil {
		t.Fatal(err)
	}
	if err := writeGuest(two, "vdb", 0x32); err != nil {
		t.Fatal(err)
	}
	// Offline change of the shut-off VM's disk.
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 8M", off.disks[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if got := s.webUIRestore(t, two, l2, true); got.ReturnValue != 0 {
		t.Fatalf("two disks: return value %d", got.ReturnValue)
	}
	two.guestReads(t, "vda", 0xcd)
	two.guestReads(t, "vdb", 0xce)
	if got := s.webUIRestore(t, off, lo, true); got.ReturnValue != 0 {
		t.Fatalf("shut-off VM: return value %d", got.ReturnValue)
	}
	if off.running(t) {
		t.Fatal("the VM that was shut off at backup time runs after its restore")
	}
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-r", "-c", "read -P 0xef 1M 8M", off.disks[0].Path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("failed")) {
		t.Fatalf("shut-off VM's disk does not hold its backed-up data: %v %s", err, out)
	}
	noPreRestore(t, two)
	noPreRestore(t, off)
}

// TestRestoreBrokenBackup: a missing or corrupted image fails the restore with
// 37 or 38 while the VM keeps running on its current disks.
func TestRestoreBrokenBackup(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rc     ldapschema.ReturnCode
		break_ func(img string) error
		cli    bool // through control.Restore, as controld restore runs it
	}{
		{"missing image", ldapschema.RCMissingFiles, os.Remove, true},
		{"corrupt image", ldapschema.RCCorruptImage, func(img string) error {
			f, err := os.OpenFile(img, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			// Overwrite the qcow2 header's L1 table offset and refcount table.
			_, err = f.WriteAt(bytes.Repeat([]byte{0xff}, 64), 40)
			return err
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, v, l := changedSinceBackup(t, 0x44)
			img := filepath.Join(s.backup, "vm-persistent", "pool-a", v.name, l.Name, filepath.Base(v.disks[0].Path)+"."+l.Name)
			if err := tc.break_(img); err != nil {
				t.Fatal(err)
			}
			var got ldapschema.Leaf
			if tc.cli {
				ctx, cancel := context.WithTimeout(context.Background(), leafLimit)
				defer cancel()
				err := control.Restore(ctx, s.store, v.name, l.Name, control.RestoreSteps{
					Decide: func([]string) (bool, error) { return true, nil }})
				// The leaf's return value is the backup's again: the
				// command must read the restore's own outcome.
				if err == nil || !strings.Contains(err.Error(), tc.rc.String()) {
					t.Fatalf("controld restore of a broken backup: %v, want the restore's failure (%d)", err, tc.rc)
				}
				got = waitLeaf(t, s.store, l.DN, leafLimit, modeIs("finished"))
			} else {
				got = s.webUIRestore(t, v, l, true)
			}
			// The restore's code goes to its record; the backup's stays.
			if got.LastRestore == nil || got.LastRestore.Code != int(tc.rc) || got.ReturnValue != 0 {
				t.Fatalf("return value %d, last restore %+v, want 0 and %d", got.ReturnValue, got.LastRestore, tc.rc)
			}
			if !v.running(t) {
				t.Fatal("VM stopped by a refused restore")
			}
			v.guestReads(t, "vda", 0x44)
			noBacking(t, v.disks[0].Path)
		})
	}
}

// writeGuest writes a pattern where the disk's creation pattern lies, through
// the running guest's own block device.
func writeGuest(v *vm, target string, pattern byte) error {
	return testenv.WriteGuestPattern(env.lv.URI, env.lv.LogDir, v.name, target, pattern, testenv.PatternOffset, testenv.PatternLength)
}

// TestRestoreNotStartedWhileBackupRuns: the web UI asks for a restore while a
// backup of the VM is under way; the node refuses it (22) and touches
// nothing. The backup leaf stays restorable and good: with one iteration, a
// failed night does not make retention delete it, and a later restore from
// it brings back what the guest had.
func TestRestoreNotStartedWhileBackupRuns(t *testing.T) {
	s := newSite(t, env.root)
	v := s.addVM(true, 64, 0xab)
	if err := waitFilled(v); err != nil {
		t.Fatal(err)
	}
	if err := s.store.Update(s.store.Tree.VMBackup(v.name), "", map[string][]string{
		ldapschema.AttrBackupNumberOfIterations: {"1"}}); err != nil {
		t.Fatal(err)
	}
	startNode(t, s.host, env.hv)
	day := func(d int) time.Time { return time.Date(2024, 1, d, 3, 0, 0, 0, time.UTC) }

	// A good backup, made by controld and the node.
	_, stopFirst := startNightlyControl(t)
	good := s.backedUp(t, v, day(2))
	stopFirst()

	// An old failed leaf, for retention to have something to delete: its
	// removal shows retention has run.
	old := fsm.FormatTime(day(1))
	if err := s.store.Add(ldapschema.NewLeafAddRequest(s.store.Tree, v.name, old, "finished", old)); err != nil {
		t.Fatal(err)
	}
	if err := s.store.Update(s.store.Tree.Leaf(v.name, old), "", map[string][]string{ldapschema.AttrReturnValue: {"5"}}); err != nil {
		t.Fatal(err)
	}
	// Tonight's backup is under way (controld is down, so it stays so).
	night := fsm.FormatTime(day(3))
	if err := s.store.Add(ldapschema.NewLeafAddRequest(s.store.Tree, v.name, night, "initialize", night)); err != nil {
		t.Fatal(err)
	}

	// The web UI's first write; its own guard sees nothing unretaining.
	if err := env.slapd.LDAPModify("dn: " + good.DN + "\nchangetype: modify\nreplace: sstProvisioningState\nsstProvisioningState: 0\n-\nreplace: sstProvisioningMode\nsstProvisioningMode: unretainSmallFiles\n"); err != nil {
		t.Fatal(err)
	}
	refused := waitLeaf(t, s.store, good.DN, leafLimit, modeIs("unretainedSmallFiles"))
	if refused.ReturnValue != int(ldapschema.RCCannotLockMachine) {
		t.Fatalf("restore during a backup answered %d, want %d", refused.ReturnValue, ldapschema.RCCannotLockMachine)
	}
	if !v.running(t) {
		t.Fatal("the refused restore stopped the VM")
	}
	v.guestReads(t, "vda", 0xab)

	// Tonight's backup fails (no RAM disk), then controld runs again.
	hidden := s.ramdisk + ".away"
	if err := os.Rename(s.ramdisk, hidden); err != nil {
		t.Fatal(err)
	}
	_, cancelSecond := startNightlyControl(t)
	defer cancelSecond()
	closed := waitLeaf(t, s.store, good.DN, leafLimit, modeIs("finished"))
	failed := waitLeaf(t, s.store, s.store.Tree.Leaf(v.name, night), leafLimit, modeIs("finished"))
	if failed.ReturnValue == 0 {
		t.Fatal("tonight's backup did not fail")
	}
	if closed.ReturnValue != 0 || closed.LastRestore == nil || closed.LastRestore.Code != int(ldapschema.RCCannotLockMachine) {
		t.Fatalf("refused restore closed with return value %d, last restore %+v; want 0 and 22", closed.ReturnValue, closed.LastRestore)
	}
	if !control.Restorable(closed) {
		t.Fatal("the refused restore made the backup unrestorable")
	}
	// Retention has run once the old failed leaf is gone; the good backup stays.
	deadline := time.Now().Add(leafLimit)
	for {
		if _, err := s.store.Get(s.store.Tree.Leaf(v.name, old), "1.1"); errors.Is(err, ldapschema.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("retention never removed the old failed leaf")
		}
		time.Sleep(50 * time.Millisecond)
	}
	e, err := s.store.Get(good.DN, "*")
	if err != nil {
		t.Fatalf("retention deleted the only good backup after a failed night: %v", err)
	}
	if m := e.GetAttributeValue(ldapschema.AttrMode); m != "finished" {
		t.Fatalf("the good backup is %s after retention, want finished", m)
	}
	backups, err := control.ListBackups(s.store, v.name)
	if err != nil {
		t.Fatal(err)
	}
	shown := false
	for _, b := range backups {
		shown = shown || (b.Leaf == good.Name && strings.Contains(b.LastRestore, "failed 22"))
	}
	if !shown {
		t.Fatalf("controld ls does not show the refused restore: %+v", backups)
	}

	// A later restore from it works: the guest reads the backed-up data.
	if err := os.Rename(hidden, s.ramdisk); err != nil {
		t.Fatal(err)
	}
	if err := writeGuest(v, "vda", 0x11); err != nil {
		t.Fatal(err)
	}
	got := s.webUIRestore(t, v, good, true)
	if got.ReturnValue != 0 || got.LastRestore == nil || got.LastRestore.Result != "done" {
		t.Fatalf("restore: return value %d, last restore %+v", got.ReturnValue, got.LastRestore)
	}
	v.guestReads(t, "vda", 0xab)
}

// startNightlyControl runs a controller with its scheduler (and so
// retention); the returned func stops it, as does the test's end.
func startNightlyControl(t *testing.T) (*control.Controller, func()) {
	t.Helper()
	c := control.New(control.Options{Store: newStore(t), Log: quietLog(t).WithField("side", "control"),
		Nightly: &control.NightlyOptions{Location: time.UTC, CatchUpWindow: 0}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return c, stop
}
