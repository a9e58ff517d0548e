package libvirt

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	lv "libvirt.org/go/libvirt"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// beneathDir holds an absolute path with its own directory as its root.
func beneathDir(t testing.TB, p string) hostio.Path {
	t.Helper()
	hp, err := hostio.Beneath(filepath.Dir(p), p)
	if err != nil {
		t.Fatal(err)
	}
	return hp
}

// restoreRequest is the restore of what Snapshot left, as the node asks for
// it: the disks of the directory, files held beneath their roots, a record
// of the test's own (through h's seam), and park ("" destroys).
func restoreRequest(t testing.TB, h *Hypervisor, name string, res SnapshotResult, park string) RestoreRequest {
	t.Helper()
	var disks []RestoreDisk
	for _, d := range res.Disks {
		disks = append(disks, RestoreDisk{Target: d.Target, Live: beneathDir(t, d.Source), Backup: beneathDir(t, d.Retained)})
	}
	req := RestoreRequest{Domain: name, Disks: disks, StateFile: beneathDir(t, res.StateFile),
		XMLFile: beneathDir(t, res.XMLFile), Ownership: Ownership{Perm: 0o600},
		Record: hostio.Record{Path: hostio.In(t.TempDir()).MustJoin("intent", "restore.json"), Seam: h.seam}}
	if park != "" {
		req.ParkDir = hostio.In(park)
	}
	return req
}

// backedUp takes a backup of v (snapshot and merge) and has the guest write
// 0xee over part of its data afterwards, so that the guest tells the backup
// (0xab...) from today's VM.
func backedUp(t *testing.T, h *Hypervisor, v *testVM) SnapshotResult {
	t.Helper()
	ctx := context.Background()
	res := snapshot(t, h, v.request(ramDisk))
	if _, err := h.Merge(ctx, MergeRequest{Domain: v.spec.Name, Disks: res.Disks}); err != nil {
		t.Fatal(err)
	}
	v.guestWrites(t, "vda", 0xee, testenv.PatternOffset, 2<<20)
	return res
}

// boots counts the guest's boots: it prints FILLED once per boot.
func (v *testVM) boots(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(v.spec.SerialPath())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "FILLED")
}

// domainID is libvirt's id of the running domain: a new one for every
// start or resume from a saved state.
func (v *testVM) domainID(t *testing.T) uint {
	t.Helper()
	c, err := lv.NewConnect(lvd.URI)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.LookupDomainByName(v.spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free()
	id, err := d.GetID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// readsPrevious: the VM runs as it did before the restore, on its own disk,
// with its RAM resumed (no new boot).
func (v *testVM) readsPrevious(t *testing.T, h *Hypervisor, boots int) {
	t.Helper()
	if !v.running(t, h) {
		t.Fatal("the previous VM does not run")
	}
	v.guestReads(t, "vda", 0xee, testenv.PatternOffset, 2<<20)
	if n := v.boots(t); n != boots {
		t.Fatalf("the previous VM booted again (%d boots, was %d): its parked state was not resumed", n, boots)
	}
}

// backedUpVM is a running one-disk VM (0xab) backed up through a
// Hypervisor of the test's own, and a park directory for its restores.
func backedUpVM(t *testing.T, name string, memMiB int) (*Hypervisor, *testVM, SnapshotResult, string) {
	t.Helper()
	h := ownH(t)
	v := newVM(t, name, "", memMiB, true, 0xab)
	return h, v, backedUp(t, h, v), t.TempDir()
}

// restoreRuns is what an every-operation test needs: the operations of an
// undisturbed restore of res, and again, which brings back the backup's
// files as that restore found them and has the guest write over its data.
func restoreRuns(t *testing.T, h *Hypervisor, v *testVM, res SnapshotResult, park string) (ops []string, again func()) {
	t.Helper()
	keep := t.TempDir()
	files := []string{res.Disks[0].Retained, res.StateFile, res.XMLFile}
	for _, f := range files {
		copyFile(t, f, filepath.Join(keep, filepath.Base(f)))
	}
	h.SetSeam(&hostio.Seam{Trace: func(n int, op string) { ops = append(ops, op) }})
	if _, err := h.Restore(context.Background(), restoreRequest(t, h, v.spec.Name, res, park)); err != nil {
		t.Fatal(err)
	}
	return ops, func() {
		t.Helper()
		for _, f := range files {
			copyFile(t, filepath.Join(keep, filepath.Base(f)), f)
		}
		v.guestWrites(t, "vda", 0xee, testenv.PatternOffset, 2<<20)
	}
}

// injectAt fails the step of that name (see Hypervisor.failAt).
func injectAt(name string) func(string) error {
	return func(step string) error {
		if step == name {
			return errors.New("injected")
		}
		return nil
	}
}

// putBack tells whether a restore failed and put the previous VM back.
func putBack(err error) bool {
	return errors.Is(err, ErrRestoreFailed) && strings.Contains(err.Error(), "put back")
}

// leftParked lists what a settled restore of v must not leave: the
// previous image or the previous RAM state, parked.
func (v *testVM) leftParked(park string) []string {
	var left []string
	for _, p := range []string{v.spec.Disks[0].Path + preRestore, filepath.Join(park, v.spec.Name+".pre-restore.state")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			left = append(left, p)
		}
	}
	return left
}

// crashSeam is a seam whose crash parks the goroutine for ever: the host is
// left exactly as a kill at that point would leave it. crashed tells the op.
func crashSeam(f hostio.Fault) (*hostio.Seam, chan string) {
	crashed := make(chan string, 1)
	s := &hostio.Seam{Crash: func(op string, n int) {
		crashed <- op
		select {}
	}}
	s.Arm(f)
	return s, crashed
}

// runUntilCrash runs a step in a goroutine of its own; it returns the
// operation it crashed at, or "" and the step's outcome.
func runUntilCrash(step func() error, crashed chan string) (string, error) {
	done := make(chan error, 1)
	go func() { done <- step() }()
	select {
	case op := <-crashed:
		return op, nil
	case err := <-done:
		return "", err
	}
}

// restoreUntilCrash is runUntilCrash of a restore.
func restoreUntilCrash(h *Hypervisor, req RestoreRequest, crashed chan string) (string, error) {
	return runUntilCrash(func() error {
		_, err := h.Restore(context.Background(), req)
		return err
	}, crashed)
}

// restarted is the daemon started again: a new Hypervisor with a fresh
// seam, which req's record now passes.
func restarted(t *testing.T, req *RestoreRequest) *Hypervisor {
	t.Helper()
	h := ownH(t)
	h.SetSeam(&hostio.Seam{})
	req.Record.Seam = h.seam
	return h
}

// rerun is the restore run again by the restarted daemon, with the same
// request and record.
func rerun(t *testing.T, req RestoreRequest) (RestoreResult, error, *Hypervisor) {
	t.Helper()
	h := restarted(t, &req)
	res, err := h.Restore(context.Background(), req)
	return res, err, h
}

func loadRecord(t *testing.T, req RestoreRequest) RestoreRecord {
	t.Helper()
	rec, ok, err := LoadRestoreRecord(req.Record)
	if err != nil || !ok {
		t.Fatalf("restore record: %v %v", ok, err)
	}
	return rec
}

// A backup restored: the guest reads the data of the backup again, not what
// it wrote since, and runs from the saved state.
func TestRestoreRunning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := openH(t)
	v := newVM(t, "rest", "", 64, true, 0xab)
	res := backedUp(t, h, v)
	v.guestReads(t, "vda", 0xee, testenv.PatternOffset, 2<<20)

	req := restoreRequest(t, h, "rest", res, "")
	bad := restoreRequest(t, h, "rest", res, "")
	bad.Disks[0].Backup = beneathDir(t, filepath.Join(v.dir, "none.qcow2"))
	if _, err := h.Restore(ctx, bad); !errors.Is(err, ErrMissingFile) {
		t.Fatalf("restore without the image: %v", err)
	}
	v.guestReads(t, "vda", 0xee, testenv.PatternOffset, 2<<20) // untouched

	rres, err := h.Restore(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !rres.Running || !v.running(t, h) {
		t.Fatalf("%+v", rres)
	}
	v.guestReadsOriginal(t)
	src := res.Disks[0].Source
	if _, err := os.Stat(src + preRestore); !os.IsNotExist(err) {
		t.Fatalf("old image left: %v", err)
	}
	if fi, err := os.Stat(src); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("restored image: %v %v", fi, err)
	}
	if rec := loadRecord(t, req); rec.Phase != RestoreCleaned {
		t.Fatalf("record at %q after a restore", rec.Phase)
	}
}

func TestRestoreShutOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := openH(t)
	v := newVM(t, "restoff", "", 64, false, 0x31)
	res := snapshot(t, h, v.request(""))
	if _, err := h.Merge(ctx, MergeRequest{Domain: "restoff", Disks: res.Disks}); err != nil {
		t.Fatal(err)
	}
	src := res.Disks[0].Source
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x32 1M 1M", src).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	rres, err := h.Restore(ctx, restoreRequest(t, h, "restoff", res, ""))
	if err != nil {
		t.Fatal(err)
	}
	if rres.Running || v.running(t, h) {
		t.Fatal("a VM backed up shut off was started")
	}
	offlineReads(t, src, 0x31, testenv.PatternOffset, testenv.PatternLength)
}

// A restore that fails before the point of no return puts the previous VM
// back exactly: its disks, its definition, and its RAM state resumed from
// the park directory (no reboot). A re-run reports the same failure and
// touches nothing; a new restore (new record) then works.
func TestRestoreFailureGoesBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, v, res, park := backedUpVM(t, "restback", 64)
	before := v.boots(t)
	req := restoreRequest(t, h, "restback", res, park)

	h.failAt = injectAt("restore-start")
	if _, err := h.Restore(ctx, req); !putBack(err) {
		t.Fatalf("failed restore: %v", err)
	}
	v.readsPrevious(t, h, before)
	if _, err := os.Stat(res.Disks[0].Retained); err != nil {
		t.Fatalf("the backed-up image is gone after a failed restore: %v", err)
	}
	if _, err := os.Stat(res.Disks[0].Source + preRestore); !os.IsNotExist(err) {
		t.Fatalf("pre-restore image left: %v", err)
	}
	if rec := loadRecord(t, req); rec.Phase != RestorePutBack || !rec.Phase.Settled() {
		t.Fatalf("record at %q after a put-back", rec.Phase)
	}
	id := v.domainID(t)
	h.failAt = nil
	if _, err := h.Restore(ctx, req); !errors.Is(err, ErrRestoreFailed) || v.domainID(t) != id {
		t.Fatalf("a re-run of a put-back restore: %v (domain id %d, was %d)", err, v.domainID(t), id)
	}

	// The same backup, restored anew, then nothing parked is left.
	rres, err := h.Restore(ctx, restoreRequest(t, h, "restback", res, park))
	if err != nil || !rres.Running || !rres.FromState {
		t.Fatalf("restore: %+v %v", rres, err)
	}
	v.guestReadsOriginal(t)
	if es, _ := os.ReadDir(park); len(es) != 0 {
		t.Fatalf("park directory holds %d files after a restore", len(es))
	}
}

// Finding 1: killed between the restore's own renames (the live image just
// moved to .pre-restore), then run again and failing: the re-run must
// neither truncate nor replace the live disk, and its put-back must return
// exactly that disk and resume the parked RAM state.
func TestRestoreRerunNeverTruncatesTheLiveDisk(t *testing.T) {
	t.Parallel()
	h, v, res, park := backedUpVM(t, "resttrunc", 64)
	before := v.boots(t)

	// Crash just before the operation that follows the rename of the live
	// image to .pre-restore.
	crashed := make(chan string, 1)
	last := ""
	s := &hostio.Seam{Crash: func(string, int) { select {} }}
	s.Trace = func(n int, op string) {
		if strings.Contains(last, preRestore) && strings.HasPrefix(last, "rename") {
			crashed <- op
			select {}
		}
		last = op
	}
	h.SetSeam(s)
	req := restoreRequest(t, h, "resttrunc", res, park)
	if op, err := restoreUntilCrash(h, req, crashed); op == "" {
		t.Fatalf("the restore never renamed the live image: %v", err)
	}
	live := res.Disks[0].Source
	if _, err := os.Stat(live + preRestore); err != nil {
		t.Fatalf("the live image is not parked at the crash: %v", err)
	}

	h2 := restarted(t, &req)
	h2.failAt = injectAt("restore-start")
	if _, err := h2.Restore(context.Background(), req); !putBack(err) {
		t.Fatalf("failing re-run: %v", err)
	}
	v.readsPrevious(t, h2, before)
	offlineReads(t, res.Disks[0].Retained, 0xab, testenv.PatternOffset, testenv.PatternLength)
	if left := v.leftParked(park); left != nil {
		t.Fatalf("%q left after the put-back", left)
	}
}

// Finding 4: killed right after the restored VM was resumed (before the
// record said so), a re-run finds the VM restored and only finishes: it
// succeeds, and neither saves the restored VM over the parked state nor
// resumes the backup's state a second time (same domain id).
func TestRestoreRerunAfterResumeSucceeds(t *testing.T) {
	t.Parallel()
	h, v, res, park := backedUpVM(t, "restagain", 64)

	crashed := make(chan string, 1)
	resumed := false
	s := &hostio.Seam{}
	s.Trace = func(n int, op string) {
		if resumed {
			crashed <- op
			select {}
		}
		resumed = strings.HasPrefix(op, "resume restagain from "+res.StateFile)
	}
	h.SetSeam(s)
	req := restoreRequest(t, h, "restagain", res, park)
	if op, err := restoreUntilCrash(h, req, crashed); op == "" {
		t.Fatalf("the restore never resumed: %v", err)
	}
	if rec := loadRecord(t, req); rec.Phase != RestoreResuming {
		t.Fatalf("record at %q at the crash", rec.Phase)
	}
	v.guestReadsOriginal(t)
	id := v.domainID(t)

	rres, err, h2 := rerun(t, req)
	if err != nil || !rres.Running || !rres.FromState {
		t.Fatalf("re-run after the resume: %+v %v", rres, err)
	}
	if got := v.domainID(t); got != id {
		t.Fatalf("the re-run stopped or resumed the restored VM again (domain id %d, was %d)", got, id)
	}
	v.guestReadsOriginal(t)
	if !v.running(t, h2) {
		t.Fatal("restored VM not running")
	}
	if es, _ := os.ReadDir(park); len(es) != 0 {
		t.Fatalf("park directory holds %d files after the re-run", len(es))
	}
	// And once more: a settled restore reports its outcome and does nothing.
	if rres, err, _ := rerun(t, req); err != nil || !rres.Running || v.domainID(t) != id {
		t.Fatalf("third run: %+v %v", rres, err)
	}
}

// Finding 8: when the put-back fails, the parked RAM state stays, the record
// stays open, and the error says where the state is; once the obstacle is
// gone, a re-run finishes the put-back from the record and resumes the
// previous VM from that very state.
func TestParkedStateSurvivesFailedPutBack(t *testing.T) {
	t.Parallel()
	h, v, res, park := backedUpVM(t, "restpark", 64)
	before := v.boots(t)
	parked := filepath.Join(park, "restpark.pre-restore.state")
	retained := res.Disks[0].Retained
	req := restoreRequest(t, h, "restpark", res, park)

	// The restore fails at its resume, and something occupies the backup's
	// place, so the put-back cannot move the restored image back.
	h.failAt = func(step string) error {
		if step != "restore-start" {
			return nil
		}
		if err := os.WriteFile(retained, []byte("in the way"), 0o600); err != nil {
			return err
		}
		return errors.New("injected")
	}
	_, err := h.Restore(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), parked) {
		t.Fatalf("a failed put-back must say where the parked state is: %v", err)
	}
	if !format.IsSaveImage(parked) {
		t.Fatal("the parked state is gone after a failed put-back")
	}
	if rec := loadRecord(t, req); rec.Phase != RestorePuttingBack || rec.Phase.Settled() {
		t.Fatalf("record at %q after a failed put-back: it must stay open", rec.Phase)
	}
	if v.running(t, h) {
		t.Fatal("a VM runs while its put-back is open")
	}

	if err := os.Remove(retained); err != nil {
		t.Fatal(err)
	}
	_, err, h2 := rerun(t, req)
	if !putBack(err) {
		t.Fatalf("re-run of the put-back: %v", err)
	}
	v.readsPrevious(t, h2, before)
	offlineReads(t, retained, 0xab, testenv.PatternOffset, testenv.PatternLength)
	if _, err := os.Stat(parked); !os.IsNotExist(err) {
		t.Fatalf("parked state left once the previous VM runs from it: %v", err)
	}
	if rec := loadRecord(t, req); rec.Phase != RestorePutBack {
		t.Fatalf("record at %q", rec.Phase)
	}
}

// Finding 7: a saved XML (in a directory the vm-storage group may write)
// that names another disk path, an extra disk, or a device that reaches
// host files is refused before anything is touched.
func TestSavedXMLWithForeignDiskIsRefused(t *testing.T) {
	t.Parallel()
	h, v, res, _ := backedUpVM(t, "restxml", 64)
	orig, err := os.ReadFile(res.XMLFile)
	if err != nil {
		t.Fatal(err)
	}
	src := res.Disks[0].Source
	victim := filepath.Join(t.TempDir(), "victim.qcow2")
	copyFile(t, src, victim)
	extra := `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='` + victim + `'/><target dev='vdz' bus='virtio'/></disk>`
	cases := map[string]func(string) string{
		"another path": func(x string) string { return strings.Replace(x, "'"+src+"'", "'"+victim+"'", 1) },
		"extra disk":   func(x string) string { return strings.Replace(x, "</devices>", extra+"</devices>", 1) },
		"filesystem": func(x string) string {
			return strings.Replace(x, "</devices>", "<filesystem type='mount'><source dir='/etc'/><target dir='etc'/></filesystem></devices>", 1)
		},
		"hostdev": func(x string) string {
			return strings.Replace(x, "</devices>", "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='0' slot='1' function='0'/></source></hostdev></devices>", 1)
		},
		"qemu commandline": func(x string) string {
			x = strings.Replace(x, "<domain ", "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' ", 1)
			return strings.Replace(x, "</domain>", "<qemu:commandline><qemu:arg value='-drive'/><qemu:arg value='file=/etc/shadow'/></qemu:commandline></domain>", 1)
		},
		"cdrom of a host file": func(x string) string {
			return strings.Replace(x, "</devices>", "<disk type='file' device='cdrom'><source file='/etc/shadow'/><target dev='hdc' bus='ide'/><readonly/></disk></devices>", 1)
		},
	}
	id := v.domainID(t)
	for name, edit := range cases {
		x := edit(string(orig))
		if x == string(orig) {
			t.Fatalf("%s: the edit changed nothing", name)
		}
		if err := os.WriteFile(res.XMLFile, []byte(x), 0o644); err != nil {
			t.Fatal(err)
		}
		req := restoreRequest(t, h, "restxml", res, t.TempDir())
		if _, err := h.Restore(context.Background(), req); !errors.Is(err, ErrDiskMismatch) {
			t.Fatalf("%s: saved XML accepted: %v", name, err)
		}
		if _, ok, _ := LoadRestoreRecord(req.Record); ok {
			t.Fatalf("%s: a refused restore wrote a record", name)
		}
		if v.domainID(t) != id {
			t.Fatalf("%s: the VM was stopped", name)
		}
		v.guestReads(t, "vda", 0xee, testenv.PatternOffset, 2<<20)
		if _, err := os.Stat(res.Disks[0].Retained); err != nil {
			t.Fatalf("%s: backed-up image moved: %v", name, err)
		}
	}
	if err := os.WriteFile(res.XMLFile, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Restore(context.Background(), restoreRequest(t, h, "restxml", res, t.TempDir())); err != nil {
		t.Fatalf("the untouched XML: %v", err)
	}
	v.guestReadsOriginal(t)
}

// The rule itself, without a VM: what a saved XML may name.
func TestSavedXMLReachingHostFilesIsRefused(t *testing.T) {
	disks := []Disk{{Target: "vda", Source: "/pool/vm-vda.qcow2"}}
	dom := func(devices string) string {
		return `<domain type='kvm'><name>vm</name><memory unit='MiB'>64</memory><os><type>hvm</type></os><devices>` +
			`<emulator>/usr/bin/qemu-system-x86_64</emulator>` +
			`<disk type='file' device='disk'><source file='/pool/vm-vda.qcow2'/><target dev='vda'/></disk>` + devices + `</devices></domain>`
	}
	current := dom(`<serial type='file'><source path='/var/log/vm.log'/></serial>`)
	ok := []string{
		dom(""),
		dom(`<serial type='file'><source path='/var/log/vm.log'/></serial>`), // the current definition has it
		dom(`<disk type='file' device='floppy'><source file='/pool/boot.img'/><target dev='fda'/></disk>`),
	}
	for _, x := range ok {
		if err := checkSavedXML(x, "vm", disks, current); err != nil {
			t.Errorf("refused: %v\n%s", err, x)
		}
	}
	bad := []string{
		strings.Replace(dom(""), "<name>vm</name>", "<name>other</name>", 1),
		dom(`<serial type='file'><source path='/root/.ssh/authorized_keys'/></serial>`),
		dom(`<disk type='block' device='disk'><source dev='/dev/sda'/><target dev='vdb'/></disk>`),
		dom(`<disk type='block' device='cdrom'><source dev='/dev/sda'/><target dev='hdc'/></disk>`),
		dom(`<interface type='ethernet'><script path='/tmp/x.sh'/></interface>`),
		strings.Replace(dom(""), "/usr/bin/qemu-system-x86_64", "/tmp/qemu", 1),
		dom(`<shmem name='x'/>`),
	}
	for _, x := range bad {
		if err := checkSavedXML(x, "vm", disks, current); !errors.Is(err, ErrDiskMismatch) {
			t.Errorf("accepted (%v):\n%s", err, x)
		}
	}
}

// A restore crashed at every operation of a running one-disk VM, then run
// again by a fresh daemon, ends with the VM running restored (a crash never
// turns into a put-back: the re-run goes on from the record), the guest
// reading the backup's data, and nothing of the restore left. A crash just
// after operation N leaves the host as a crash just before N+1 (nothing
// happens between them), so crashing before each, and after the last, is
// every point.
func TestRestoreCrashAtEveryOperation(t *testing.T) {
	t.Parallel()
	h, v, res, park := backedUpVM(t, "restcrash", 32)
	ops, again := restoreRuns(t, h, v, res, park)
	if len(ops) < 15 {
		t.Fatalf("only %d operations: %v", len(ops), ops)
	}
	var faults []hostio.Fault
	for _, n := range pointsToRun(len(ops)) {
		faults = append(faults, hostio.Fault{Kind: hostio.CrashBefore, N: n})
	}
	faults = append(faults, hostio.Fault{Kind: hostio.CrashAfter, N: len(ops)})
	held := 0
	for _, f := range faults {
		again()
		hc := ownH(t)
		s, crashed := crashSeam(f)
		hc.SetSeam(s)
		req := restoreRequest(t, hc, "restcrash", res, park)
		op, err := restoreUntilCrash(hc, req, crashed)
		if op == "" {
			t.Fatalf("%v: no crash (%v)", f, err)
		}
		rres, err, h2 := rerun(t, req)
		if err != nil || !rres.Running {
			t.Fatalf("%v (%s): re-run: %+v %v", f, op, rres, err)
		}
		if !v.running(t, h2) {
			t.Fatalf("%v (%s): VM not running", f, op)
		}
		v.guestReadsOriginal(t)
		if left := v.leftParked(park); left != nil {
			t.Fatalf("%v (%s): %q left", f, op, left)
		}
		if rec := loadRecord(t, req); rec.Phase != RestoreCleaned {
			t.Fatalf("%v (%s): record at %q", f, op, rec.Phase)
		}
		t.Logf("%v before %q: held", f, op)
		held++
	}
	t.Logf("crash points: %d held of %d", held, len(faults))
}

// A restore whose Nth operation fails (EIO), for every N of a running
// one-disk VM: before the point of no return the previous VM runs again as
// it was (its data, its RAM resumed: no new boot); after it the VM runs
// restored and a re-run finishes. Never a lost disk, never a VM left off.
func TestRestoreFailureAtEveryOperation(t *testing.T) {
	t.Parallel()
	h, v, res, park := backedUpVM(t, "restfail", 32)
	ops, again := restoreRuns(t, h, v, res, park)
	held, points := 0, pointsToRun(len(ops))
	for _, n := range points {
		again()
		boots := v.boots(t)
		hf := ownH(t)
		s := &hostio.Seam{}
		s.Arm(hostio.Fault{Kind: hostio.FailWith, N: n, Errno: syscall.EIO})
		hf.SetSeam(s)
		req := restoreRequest(t, hf, "restfail", res, park)
		_, ferr := hf.Restore(context.Background(), req)
		rec, found, err := LoadRestoreRecord(req.Record)
		if err != nil {
			t.Fatal(err)
		}
		if found && rec.Phase.Restored() && rec.Phase != RestoreCleaned {
			if _, err, _ := rerun(t, req); err != nil {
				t.Fatalf("fail:%d (%s): re-run after the point of no return: %v", n, ops[n-1], err)
			}
			rec = loadRecord(t, req)
		}
		switch {
		case rec.Phase == RestoreCleaned:
			if !v.running(t, hf) {
				t.Fatalf("fail:%d (%s): restored VM not running", n, ops[n-1])
			}
			v.guestReadsOriginal(t)
		case !found || rec.Phase == RestorePutBack:
			if ferr == nil {
				t.Fatalf("fail:%d (%s): a put-back reported success", n, ops[n-1])
			}
			v.readsPrevious(t, hf, boots)
			offlineReads(t, res.Disks[0].Retained, 0xab, testenv.PatternOffset, testenv.PatternLength)
		default:
			t.Fatalf("fail:%d (%s): record at %q: %v", n, ops[n-1], rec.Phase, ferr)
		}
		if left := v.leftParked(park); left != nil {
			t.Fatalf("fail:%d (%s): %q left", n, ops[n-1], left)
		}
		t.Logf("fail:%d:EIO at %q: %s, held", n, ops[n-1], rec.Phase)
		held++
	}
	t.Logf("io-error points: %d held of %d", held, len(points))
}
