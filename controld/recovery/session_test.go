package recovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// sessionWorld is a directory of the test's own and a backup root filled
// with real (tiny) qcow2 images, so a run reads them exactly as on a backup
// host, with qemu-img and minus libvirt.
type sessionWorld struct {
	t     *testing.T
	store *ldapschema.Store
	root  string
}

func newSessionWorld(t *testing.T) *sessionWorld {
	t.Helper()
	return &sessionWorld{t: t, store: startDirectory(t), root: filepath.Join(t.TempDir(), "backup")}
}

// backup writes one iteration as a node leaves it (shut-off VM, one qcow2
// disk vda) and returns the VM's saved subtree. withConfig puts a VM-level
// backup configuration pointing at the world's root into the saved LDIF.
func (w *sessionWorld) backup(vm, leaf string, withConfig bool) []*ldap.Entry {
	w.t.Helper()
	f := fakeBackup{root: w.root, pool: "pool-a", vm: vm, leaf: leaf, disks: []string{"vda"}, qcow2: true}
	if withConfig {
		f.cfg = backupConfig(w.root, 5)
	}
	return f.write(w.t, w.store.Tree.Base).savedSubtree(w.store.Tree.Base)
}

// run runs a recovery with o, answers read from in.
func (w *sessionWorld) run(in io.Reader, out io.Writer, o Options) error {
	o.In, o.Out = in, out
	o.Now = func() time.Time { return time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC) }
	return Run(context.Background(), w.store, o)
}

func (w *sessionWorld) leaves(vm string) []string {
	w.t.Helper()
	ls, err := control.Leaves(w.store, vm)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		if fsm.Restorable(l.FSM("")) {
			out = append(out, l.Name)
		}
	}
	return out
}

// TestRunJSON: --dry-run --json reports and changes nothing, --yes
// --json imports and reports, --check --json then finds both sides agree.
func TestRunJSON(t *testing.T) {
	w := newSessionWorld(t)
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
	if err := w.run(nil, &out, Options{DryRun: true, JSON: true, Paths: []string{w.root}}); err != nil {
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
	if err := w.run(nil, &out, Options{Yes: true, JSON: true, RecreateVMs: true, Paths: []string{w.root}}); err != nil {
		t.Fatalf("import: %v\n%s", err, out.String())
	}
	var done struct {
		Imported []ImportResult `json:"imported"`
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
	if err := w.run(nil, &out, Options{Check: true, JSON: true}); err != nil {
		t.Fatalf("check: %v\n%s", err, out.String())
	}
	var check CheckReport
	if err := json.Unmarshal(out.Bytes(), &check); err != nil {
		t.Fatal(err)
	}
	if check.Checked != 3 || len(check.Roots) != 1 || check.Roots[0].Source == SourceCommandLine {
		t.Fatalf("check:\n%s", out.String())
	}

	// A leaf whose files are gone makes --check fail.
	if err := os.RemoveAll(filepath.Join(w.root, "vm-persistent", "pool-a", "vm-j2")); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := w.run(nil, &out, Options{Check: true}); err == nil || !strings.Contains(out.String(), `VM "vm-j2" backup 20240101T030000Z: files gone`) {
		t.Fatalf("check with a leaf's files gone: %v\n%s", err, out.String())
	}
}

// terminal is the operator's side of an interactive session: what
// the command printed so far, and a pipe for the answers.
type terminal struct {
	mu  sync.Mutex
	out bytes.Buffer
	in  *io.PipeWriter
}

func (r *terminal) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.Write(p)
}

func (r *terminal) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// wait waits for the n-th occurrence of prompt.
func (r *terminal) wait(t *testing.T, prompt string, n int) {
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
func (r *terminal) answer(t *testing.T, prompt string, n int, line string) {
	t.Helper()
	r.wait(t, prompt, n)
	if _, err := io.WriteString(r.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

// TestRunInteractiveRetry follows the seed's example session: VMs
// without an entry are offered for re-creation (one accepted, one
// declined), a missing backup configuration is reported, the operator adds
// one and hits ENTER, the validation runs again without anything typed
// again, and the import follows the final yes.
func TestRunInteractiveRetry(t *testing.T) {
	w := newSessionWorld(t)
	w.backup("vm-i1", "20240101T030000Z", false)
	w.backup("vm-i2", "20240101T030000Z", false)
	w.backup("vm-i2", "20240102T030000Z", false)

	pr, pw := io.Pipe()
	term := &terminal{in: pw}
	done := make(chan error, 1)
	go func() { done <- w.run(pr, term, Options{Paths: []string{w.root}}) }()

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
	err = w.run(strings.NewReader(""), &buf, Options{Paths: []string{w.root}})
	if err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("no answers: %v\n%s", err, buf.String())
	}
}
