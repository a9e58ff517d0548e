package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// recoverWorld is a directory of the test's own, a controld configuration
// for it and a backup root, filled with real (tiny) qcow2 images, so the
// command runs exactly as an operator would run it, minus libvirt.
type recoverWorld struct {
	t      *testing.T
	store  *ldapschema.Store
	config string
	root   string
}

func newRecoverWorld(t *testing.T) *recoverWorld {
	t.Helper()
	dir := t.TempDir()
	s, err := testenv.StartSlapd(testenv.SlapdOptions{Dir: filepath.Join(dir, "slapd"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	store, err := ldapschema.Dial(ldapschema.StoreOptions{URL: s.URL, BindDN: s.AdminDN, Password: s.AdminPassword, Base: s.Base})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	pw := filepath.Join(dir, "password")
	cfg := filepath.Join(dir, "controld.yaml")
	if err := os.WriteFile(pw, []byte(s.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("ldap:\n  url: %s\n  bindDN: %q\n  passwordFile: %s\n  base: %q\n", s.URL, s.AdminDN, pw, s.Base)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "backup")
	return &recoverWorld{t: t, store: store, config: cfg, root: root}
}

// backup writes one iteration as a node leaves it (shut-off VM, one qcow2
// disk vda) and returns the VM's saved subtree. withConfig puts a VM-level
// backup configuration pointing at the world's root into the saved LDIF.
func (w *recoverWorld) backup(vm, leaf string, withConfig bool) []*ldap.Entry {
	w.t.Helper()
	tree := w.store.Tree
	src := "/var/virtualization/vm-persistent/pool-a/" + vm + "-vda.qcow2"
	saved := []*ldap.Entry{
		ldapschema.EntryOf(ldapschema.NewVMAddRequest(tree, ldapschema.VM{Name: vm, Node: "kvm-01", Pool: "vmpool-1"})),
		ldapschema.EntryOf(ldapschema.NewDevicesAddRequest(tree, vm)),
		ldapschema.EntryOf(ldapschema.NewDiskAddRequest(tree, vm, ldapschema.Disk{Target: "vda", SourceFile: src})),
	}
	if withConfig {
		saved = append(saved, ldapschema.EntryOf(ldapschema.NewBackupConfigAddRequest(tree.VMBackup(vm),
			ldapschema.BackupConfig{RootDir: w.root, Iterations: 5})))
	}
	dir := filepath.Join(w.root, "vm-persistent", "pool-a", vm, leaf)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		w.t.Fatal(err)
	}
	xml := "<domain type='qemu'><name>" + vm + "</name><devices><disk type='file' device='disk'>" +
		"<driver name='qemu' type='qcow2'/><source file='" + src + "'/><target dev='vda' bus='virtio'/></disk></devices></domain>\n"
	for name, body := range map[string]string{
		vm + ".state": "Machine is not running, no state file\n",
		vm + ".xml":   xml,
		vm + ".ldif":  ldapschema.FormatLDIF(saved),
	} {
		if err := os.WriteFile(filepath.Join(dir, name+"."+leaf), []byte(body), 0o640); err != nil {
			w.t.Fatal(err)
		}
	}
	img := filepath.Join(dir, vm+"-vda.qcow2."+leaf)
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "16M").CombinedOutput(); err != nil {
		w.t.Fatalf("qemu-img: %v %s", err, out)
	}
	return saved
}

// run runs `controld recover` in-process.
func (w *recoverWorld) run(in io.Reader, out io.Writer, args ...string) error {
	args = append([]string{"-config", w.config}, args...)
	return recoverCommand(context.Background(), args, recoverIO{in: in, out: out,
		now: func() time.Time { return time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC) }})
}

func (w *recoverWorld) leaves(vm string) []string {
	w.t.Helper()
	ls, err := control.Leaves(w.store, vm)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		if control.Restorable(l) {
			out = append(out, l.Name)
		}
	}
	return out
}

// TestRecoverJSON: --dry-run --json reports and changes nothing, --yes
// --json imports and reports, --check --json then finds both sides agree.
func TestRecoverJSON(t *testing.T) {
	w := newRecoverWorld(t)
	// vm-j1 kept its entry, lost its ou=backup; vm-j2 lost everything.
	saved := w.backup("vm-j1", "20240101T030000Z", true)
	w.backup("vm-j1", "20240102T030000Z", true)
	for _, e := range saved[:3] {
		if err := w.store.Add(ldapschema.AddRequestOf(e)); err != nil {
			t.Fatal(err)
		}
	}
	w.backup("vm-j2", "20240101T030000Z", true)

	var out bytes.Buffer
	if err := w.run(nil, &out, "--dry-run", "--json", w.root); err != nil {
		t.Fatalf("dry run: %v\n%s", err, out.String())
	}
	var plan struct {
		DryRun bool `json:"dryRun"`
		VMs    []struct {
			VM         string `json:"vm"`
			Entry      string `json:"entry"`
			Iterations []struct {
				Leaf   string `json:"leaf"`
				Status string `json:"status"`
			} `json:"iterations"`
			Blockers []struct {
				Kind string `json:"kind"`
			} `json:"blockers"`
		} `json:"vms"`
		Imported []any `json:"imported"`
	}
	if err := json.Unmarshal(out.Bytes(), &plan); err != nil {
		t.Fatalf("%v in:\n%s", err, out.String())
	}
	if !plan.DryRun || len(plan.VMs) != 2 || len(plan.Imported) != 0 ||
		plan.VMs[0].VM != "vm-j1" || len(plan.VMs[0].Iterations) != 2 || plan.VMs[0].Iterations[1].Status != "new" ||
		plan.VMs[1].Entry != "missing" || len(plan.VMs[1].Blockers) != 1 || plan.VMs[1].Blockers[0].Kind != "vm-entry-missing" {
		t.Fatalf("dry-run plan:\n%s", out.String())
	}
	if got := w.leaves("vm-j1"); len(got) != 0 {
		t.Fatalf("a dry run created leaves %q", got)
	}

	out.Reset()
	if err := w.run(nil, &out, "--yes", "--json", w.root, "--recreate-vms"); err != nil {
		t.Fatalf("import: %v\n%s", err, out.String())
	}
	var done struct {
		Imported []control.ImportResult `json:"imported"`
	}
	if err := json.Unmarshal(out.Bytes(), &done); err != nil {
		t.Fatal(err)
	}
	if len(done.Imported) != 2 || done.Imported[0].Error != "" || done.Imported[1].Error != "" {
		t.Fatalf("imported:\n%s", out.String())
	}
	if got := strings.Join(w.leaves("vm-j1"), " "); got != "20240101T030000Z 20240102T030000Z" {
		t.Fatalf("vm-j1 leaves %q", got)
	}
	if got := strings.Join(w.leaves("vm-j2"), " "); got != "20240101T030000Z" {
		t.Fatalf("vm-j2 leaves %q", got)
	}

	// Now the configurations are back, the roots come from the directory.
	out.Reset()
	if err := w.run(nil, &out, "--check", "--json"); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	var check control.CheckReport
	if err := json.Unmarshal(out.Bytes(), &check); err != nil {
		t.Fatal(err)
	}
	if check.Checked != 3 || len(check.Roots) != 1 || check.Roots[0].Source == "command line" {
		t.Fatalf("check:\n%s", out.String())
	}

	// A leaf whose files are gone makes --check fail.
	if err := os.RemoveAll(filepath.Join(w.root, "vm-persistent", "pool-a", "vm-j2")); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := w.run(nil, &out, "--check"); err == nil || !strings.Contains(out.String(), `VM "vm-j2" backup 20240101T030000Z: files gone`) {
		t.Fatalf("check with a leaf's files gone: %v\n%s", err, out.String())
	}

	for _, args := range [][]string{{"--json"}, {"--check", "--yes"}, {"--yes", "--dry-run"}, {"--nope"}} {
		var ue usageError
		if err := w.run(nil, io.Discard, args...); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}

// recoverTerminal is the operator's side of an interactive session: what
// the command printed so far, and a pipe for the answers.
type recoverTerminal struct {
	mu  sync.Mutex
	out bytes.Buffer
	in  *io.PipeWriter
}

func (r *recoverTerminal) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.Write(p)
}

func (r *recoverTerminal) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// wait waits for the n-th occurrence of prompt.
func (r *recoverTerminal) wait(t *testing.T, prompt string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(r.String(), prompt) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no prompt %q (#%d); output so far:\n%s", prompt, n, r.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// answer waits for the n-th occurrence of prompt, then types line.
func (r *recoverTerminal) answer(t *testing.T, prompt string, n int, line string) {
	t.Helper()
	r.wait(t, prompt, n)
	if _, err := io.WriteString(r.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// TestRecoverInteractiveRetry follows the seed's example session: VMs
// without an entry are offered for re-creation (one accepted, one
// declined), a missing backup configuration is reported, the operator adds
// one and hits ENTER, the validation runs again without anything typed
// again, and the import follows the final yes.
func TestRecoverInteractiveRetry(t *testing.T) {
	w := newRecoverWorld(t)
	w.backup("vm-i1", "20240101T030000Z", false)
	w.backup("vm-i2", "20240101T030000Z", false)
	w.backup("vm-i2", "20240102T030000Z", false)

	pr, pw := io.Pipe()
	term := &recoverTerminal{in: pw}
	done := make(chan error, 1)
	go func() { done <- w.run(pr, term, w.root) }()

	term.answer(t, "Re-create it (", 1, "no")  // vm-i1
	term.answer(t, "Re-create it (", 2, "yes") // vm-i2
	term.answer(t, "hit ENTER to validate again", 1, "")
	// Nothing fixed: the same list again, nothing asked twice. Now fix it.
	term.wait(t, "hit ENTER to validate again", 2)
	if err := w.store.Add(ldapschema.NewBackupConfigAddRequest(w.store.Tree.GlobalBackup(),
		ldapschema.BackupConfig{RootDir: w.root, Iterations: 5})); err != nil {
		t.Fatal(err)
	}
	term.answer(t, "hit ENTER to validate again", 2, "")
	term.answer(t, "Would you like those to be recovered?", 1, "yes")
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the session did not end; output:\n%s", term.String())
	}
	out := term.String()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		" - VM \"vm-i2\": 20240101T030000Z, 20240102T030000Z (held back: see what is missing below)",
		" - VM \"vm-i2\": 20240101T030000Z, 20240102T030000Z (VM entry and disks re-created from the LDIF saved with 20240102T030000Z; configuration ou=backup,ou=configuration,",
		"You are currently missing the following:\n - no backup configuration reaches VM vm-i2",
		" - VM \"vm-i1\": 20240101T030000Z (skipped as you chose: its entry is not re-created)",
		"Ready: 2 backup(s) of 1 VM(s).",
		"All unknown backups have now been recovered!",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "Re-create it ("); n != 2 {
		t.Errorf("asked %d times about re-creating a VM, want 2:\n%s", n, out)
	}
	if got := strings.Join(w.leaves("vm-i2"), " "); got != "20240101T030000Z 20240102T030000Z" {
		t.Fatalf("vm-i2 leaves %q", got)
	}
	if _, err := w.store.Get(w.store.Tree.VM("vm-i1")); !errors.Is(err, ldapschema.ErrNotFound) {
		t.Fatalf("the declined VM was created: %v", err)
	}
	e, err := w.store.Get(w.store.Tree.VM("vm-i2"), ldapschema.AttrNode)
	if err != nil || e.GetAttributeValue(ldapschema.AttrNode) != "kvm-01" {
		t.Fatalf("vm-i2 re-created without its node: %v %v", e, err)
	}

	// Without answers the session stops and says how to run unattended.
	var buf bytes.Buffer
	err = w.run(strings.NewReader(""), &buf, w.root)
	if err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("no answers: %v\n%s", err, buf.String())
	}
}
