package crashtest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// The invariants after an operation point. The checks of the daemon-level
// harness (check_test.go) are called, not repeated: vmProblems,
// guestProblems' reading through the guest, backupProblems, listing and
// leftovers.

func (w *world) nodeStateDir() string { return filepath.Join(w.root, "node-state") }

func (w *world) backupDir(v *testVM, leaf string) string {
	return filepath.Join(w.backup, "vm-persistent", "pool-a", v.name, leaf)
}

// documented: a return code the web UI and the operator guide know, other
// than "undefined error".
func documented(rv int) bool {
	c := ldapschema.ReturnCode(rv)
	return c.Known() && c != ldapschema.RCUndefined && c != ldapschema.RCSuccess
}

// leafEnd checks how the leaf ended: finished, with 0 or a documented code.
func leafEnd(final ldapschema.Leaf) (outcome string, problem string) {
	rv := final.ReturnValue
	switch {
	case final.Mode != string(fsm.Finished):
		return "", "leaf ended " + final.Mode + ", not finished"
	case rv == 0:
		return "finished rv=0", ""
	case documented(rv):
		return fmt.Sprintf("finished rv=%d (%s)", rv, ldapschema.ReturnCode(rv)), ""
	}
	return "", fmt.Sprintf("finished rv=%d (%s): not a documented code", rv, ldapschema.ReturnCode(rv))
}

// diskProblems: every disk of v is an image qemu-img finds sound (the
// chain's absence of backing files is vmProblems').
func diskProblems(v *testVM) []string {
	var out []string
	for _, d := range v.disks {
		if err := format.CheckImage(context.Background(), d.Path, ""); err != nil {
			out = append(out, fmt.Sprintf("disk %s: %v", filepath.Base(d.Path), err))
		}
	}
	return out
}

// reads tells, disk by disk, which of the candidate patterns the guest
// reads: through its own block device when it runs, else through the image
// chain as it would on its next start. 0 means neither.
func (w *world) reads(v *testVM, candidates ...map[string]byte) (map[string]byte, []string) {
	got := map[string]byte{}
	var notes []string
	for _, d := range v.disks {
		var tried []string
		for _, c := range candidates {
			p := c[d.Target]
			if slices.Contains(tried, fmt.Sprintf("0x%02x", p)) {
				continue
			}
			tried = append(tried, fmt.Sprintf("0x%02x", p))
			var err error
			if v.running {
				err = testenv.VerifyGuestPattern(w.lv.URI, w.lv.LogDir, v.name, d.Target, p, testenv.PatternOffset, testenv.PatternLength)
			} else {
				err = imagePattern(d.Path, p)
			}
			if err == nil {
				got[d.Target] = p
				break
			}
			if !strings.Contains(err.Error(), "does not read what was expected") {
				notes = append(notes, fmt.Sprintf("%s: %v", d.Target, err))
			}
		}
		if got[d.Target] == 0 {
			what := "neither " + strings.Join(tried, " nor ")
			if zeroErr := imagePatternOrGuest(w, v, d, 0); zeroErr == nil {
				what += ": zeros"
			}
			notes = append(notes, fmt.Sprintf("guest of %s reads %s on %s", v.name, what, d.Target))
		}
	}
	return got, notes
}

func imagePatternOrGuest(w *world, v *testVM, d testenv.DiskSpec, p byte) error {
	if v.running {
		return testenv.VerifyGuestPattern(w.lv.URI, w.lv.LogDir, v.name, d.Target, p, testenv.PatternOffset, testenv.PatternLength)
	}
	return imagePattern(d.Path, p)
}

// imagePattern reads a shut-off VM's disk through its chain with qemu-io,
// as QEMU will present it to the guest.
func imagePattern(path string, p byte) error {
	cmd := fmt.Sprintf("read -P 0x%02x %d %d", p, testenv.PatternOffset, testenv.PatternLength)
	out, err := exec.Command("qemu-io", "-r", "-U", "-f", "qcow2", "-c", cmd, path).CombinedOutput()
	switch {
	case bytes.Contains(out, []byte("Pattern verification failed")):
		return fmt.Errorf("%s does not read what was expected", filepath.Base(path))
	case err != nil:
		return fmt.Errorf("qemu-io %s: %v: %s", filepath.Base(path), err, bytes.TrimSpace(out))
	case !bytes.Contains(out, []byte(fmt.Sprintf("read %d/%d bytes", testenv.PatternLength, testenv.PatternLength))):
		return fmt.Errorf("qemu-io %s: %s", filepath.Base(path), bytes.TrimSpace(out))
	}
	return nil
}

// goodBackupProblems: the newest good backup is a leaf a restore is offered
// for (finished, 0) and retention keeps even with one iteration and this
// point's leaf counted.
func (w *world) goodBackupProblems(v *testVM, leaf string) []string {
	leaves, err := control.Leaves(w.store, v.name)
	if err != nil {
		return []string{fmt.Sprintf("leaves of %s: %v", v.name, err)}
	}
	var rl []fsm.Leaf
	var found *ldapschema.Leaf
	for i, l := range leaves {
		rl = append(rl, l.FSM(""))
		if l.Name == leaf {
			found = &leaves[i]
		}
	}
	switch {
	case found == nil:
		return []string{fmt.Sprintf("newest good backup %s: leaf gone", leaf)}
	case !control.Restorable(*found):
		return []string{fmt.Sprintf("newest good backup %s is no longer restorable: %s rv=%d (%s)",
			leaf, found.Mode, found.ReturnValue, ldapschema.ReturnCode(found.ReturnValue))}
	case slices.ContainsFunc(fsm.Expired(rl, 1), func(l fsm.Leaf) bool { return l.Name == leaf }):
		return []string{fmt.Sprintf("newest good backup %s would be deleted by retention with one iteration", leaf)}
	}
	return nil
}

// intentLeft: whatever the node keeps in its state directory about a
// settled leaf (its intent records), wherever in it.
func (w *world) intentLeft(v *testVM, leaf string) []string {
	var names []string
	root := w.nodeStateDir()
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if strings.Contains(rel, leaf) && strings.Contains(rel, v.name) {
			names = append(names, rel)
		}
		return nil
	})
	sort.Strings(names)
	if len(names) == 0 {
		return nil
	}
	return []string{"state directory: left for the settled leaf: " + strings.Join(names, ", ")}
}
