package ldapschema

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
)

// This file is the one translation between the workflow (package fsm) and
// the directory: an entry becomes an fsm.Leaf here, and an fsm.Write becomes
// a compare-and-swap modify here, for every writer (controld's reconcile and
// deadlines, the operator's restore, the node's claim and answer).

// WorkflowLeaf reads a leaf entry as the workflow sees it; host is the VM's
// sstNode where the caller knows it. It is lenient where someone must still
// act on the leaf: a name that is no time is kept as read (the node answers
// such a leaf with 18 and the control side closes it), an unreadable return
// value reads as RCUndefined and a missing one sets ReturnMissing. A mode
// that is none is an error: nobody knows what is happening to that leaf.
func WorkflowLeaf(t Tree, e *ldap.Entry, host string) (fsm.Leaf, error) {
	mode, err := fsm.ParseMode(e.GetAttributeValue(AttrMode))
	if err != nil {
		return fsm.Leaf{}, fmt.Errorf("leaf %s: %w", e.DN, err)
	}
	vm, name, _ := LeafOwner(t, e.DN)
	l := Leaf{DN: e.DN, VM: vm, Name: name, Mode: string(mode), State: e.GetAttributeValue(AttrState),
		ExecutionTime: e.GetAttributeValues(AttrExecutionTime), ReturnMissing: true}
	if v := e.GetAttributeValue(AttrReturnValue); v != "" {
		l.ReturnMissing = false
		rv, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			rv = int(RCUndefined)
		}
		l.ReturnValue = rv
	}
	l.Backup = ParseBackupRecord(l.ExecutionTime)
	l.LastRestore = ParseRestoreRecord(e.GetAttributeValues(AttrDescription))
	return l.FSM(host), nil
}

// FSM is the workflow's view of a parsed leaf, records included; host is the
// VM's node where the caller knows it.
func (l Leaf) FSM(host string) fsm.Leaf {
	m, _ := fsm.ParseMode(l.Mode)
	return fsm.Leaf{Key: l.DN, VM: l.VM, Name: l.Name, Host: host, Mode: m, State: l.State,
		ReturnValue: l.ReturnValue, ReturnMissing: l.ReturnMissing,
		Backup: l.Backup, LastRestore: l.LastRestore.Outcome()}
}

// Outcome is the workflow's view of a restore record (nil for none).
func (r *RestoreRecord) Outcome() *fsm.RestoreOutcome {
	if r == nil {
		return nil
	}
	return &fsm.RestoreOutcome{Result: fsm.RestoreResult(r.Result), Code: r.Code, Step: fsm.Mode(r.Step), At: r.At}
}

// Report is what a node's answer carries besides its Write: the step's
// execution times, merged into those the leaf has ("snapshot: 1.8"), and,
// when SetDescription, the leaf's new description (a restore publishes its
// differences there; nil clears them).
type Report struct {
	Times          []string
	SetDescription bool
	Description    []string
}

// FailedNotePrefix starts the description of a leaf the control side failed
// by itself (fsm.Write.Note).
const FailedNotePrefix = "failed: "

// ChangeOf is w as one compare-and-swap modify of a leaf whose execution
// times read exec (the records and a report's times join them); r is the
// node's report, or nil. w must not be a Remove (see Store.Write).
func ChangeOf(w fsm.Write, exec []string, r *Report) ModeChange {
	c := ModeChange{DN: w.Key, From: string(w.From), To: string(w.To), FromState: w.IfState,
		State: w.State, ReturnValue: w.ReturnValue}
	exec = append([]string(nil), exec...)
	changed := false
	if r != nil {
		for _, v := range r.Times {
			exec, changed = SetExecutionValue(exec, v), true
		}
	}
	if w.Backup != nil {
		exec, changed = SetExecutionValue(exec, FormatBackupRecord(*w.Backup)), true
	}
	if changed {
		c.ExecutionTime = exec
	}
	switch o := w.LastRestore; {
	case o != nil:
		// Replaces the differences the node published: that restore is over.
		c.Extra = map[string][]string{AttrDescription: {FormatRestoreRecord(
			RestoreRecord{Result: string(o.Result), Code: o.Code, Step: string(o.Step), At: o.At})}}
	case w.Note != "":
		c.Extra = map[string][]string{AttrDescription: {FailedNotePrefix + w.Note}}
	case r != nil && r.SetDescription:
		c.Extra = map[string][]string{AttrDescription: r.Description}
	}
	return c
}

// Write applies w to a leaf whose execution times read exec, as a
// compare-and-swap (rule 1 of package fsm): ErrConflict when the leaf is no
// longer in w.From (or w.IfState), ErrNotFound when it is gone. A Remove
// deletes the entry.
func (s *Store) Write(w fsm.Write, exec []string, r *Report) error {
	if w.From == fsm.Absent {
		return s.createLeaf(w)
	}
	if w.Remove {
		return s.DeleteIf(w.Key, modeAssertion(string(w.From), w.IfState))
	}
	return s.ChangeMode(ChangeOf(w, exec, r))
}

// createLeaf adds the leaf w creates, as the seed's Step 01: one add when
// the VM's ou=backup exists (every night but the first), else that
// container first. ErrConflict when the leaf exists already.
func (s *Store) createLeaf(w fsm.Write) error {
	vm, name, err := ParseLeafDN(s.Tree, w.Key)
	if err != nil {
		return err
	}
	req := NewLeafAddRequest(s.Tree, vm, name, string(w.To), w.State)
	err = s.Add(req)
	if errors.Is(err, ErrNotFound) {
		if err := s.EnsureBackupEntry(vm); err != nil {
			return fmt.Errorf("%s: %w", vm, err)
		}
		err = s.Add(req)
	}
	return err
}

// EnsureBackupEntry creates the VM's ou=backup container when it is missing
// (the VM's backup configuration may come from its pool or the global entry).
func (s *Store) EnsureBackupEntry(vm string) error {
	dn := s.Tree.VMBackup(vm)
	if _, err := s.Get(dn, "1.1"); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	req := ldap.NewAddRequest(dn, nil)
	req.Attribute(AttrObjectClass, []string{ClassTop, ClassOrganizationalUnit})
	req.Attribute(AttrOU, []string{"backup"})
	if err := s.Add(req); err != nil && !errors.Is(err, ErrConflict) {
		return err
	}
	return nil
}

// ExecutionTimes are e's sstProvisioningExecutionTime values; none for nil.
func ExecutionTimes(e *ldap.Entry) []string {
	if e == nil {
		return nil
	}
	return e.GetAttributeValues(AttrExecutionTime)
}

// WriteProgress replaces one execution time value of a leaf (value's key,
// e.g. "progress") while the leaf is still in mode running: the node's sign
// of life during a long step. exec is the leaf's values as read.
func (s *Store) WriteProgress(dn string, running fsm.Mode, exec []string, value string) error {
	return s.Update(dn, modeAssertion(string(running), ""),
		map[string][]string{AttrExecutionTime: SetExecutionValue(exec, value)})
}

// modeAssertion is the filter a compare-and-swap on a leaf asserts.
func modeAssertion(mode, state string) string {
	f := equalityFilter(AttrMode, mode)
	if state != "" {
		f = "(&" + f + equalityFilter(AttrState, state) + ")"
	}
	return f
}

// equalityFilter is (attr=value), value escaped.
func equalityFilter(attr, value string) string {
	return "(" + attr + "=" + ldap.EscapeFilter(value) + ")"
}
