package ldapschema

import (
	"reflect"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
)

func leafEntry(attrs map[string][]string) *ldap.Entry {
	return ldap.NewEntry(testTree.Leaf("kvm-005", "20121002T010000Z"), attrs)
}

func TestWorkflowLeaf(t *testing.T) {
	e := leafEntry(map[string][]string{
		AttrMode: {"retained"}, AttrState: {"20121002T011000Z"}, AttrReturnValue: {"0"},
		AttrExecutionTime: {"retain: 2.0", "backupReturnValue: 0"},
		AttrDescription:   {"lastRestore: failed 22 in unretainSmallFiles at 20121001T010000Z: x"},
	})
	l, err := WorkflowLeaf(testTree, e, "node-01")
	if err != nil {
		t.Fatal(err)
	}
	if l.Key != e.DN || l.VM != "kvm-005" || l.Name != "20121002T010000Z" || l.Host != "node-01" ||
		l.Mode != fsm.Retained || l.ReturnMissing || l.Backup == nil || *l.Backup != 0 ||
		l.LastRestore == nil || l.LastRestore.Code != 22 {
		t.Fatalf("%+v", l)
	}
	// Lenient where someone must act: no return value, an unreadable one.
	l, _ = WorkflowLeaf(testTree, leafEntry(map[string][]string{AttrMode: {"snapshotted"}, AttrState: {"x"}}), "")
	if !l.ReturnMissing {
		t.Errorf("missing return value not marked: %+v", l)
	}
	l, _ = WorkflowLeaf(testTree, leafEntry(map[string][]string{AttrMode: {"snapshotted"}, AttrReturnValue: {"x"}}), "")
	if l.ReturnValue != int(RCUndefined) || l.ReturnMissing {
		t.Errorf("unreadable return value: %+v", l)
	}
	if _, err := WorkflowLeaf(testTree, leafEntry(map[string][]string{AttrMode: {"Snapshot"}}), ""); err == nil {
		t.Error("a mode that is none was read")
	}
}

func TestChangeOf(t *testing.T) {
	read := leafEntry(nil)
	exec := []string{"snapshot: 1.8", "downtime: 2.9", "progress: x"}
	rc := 0
	// The node's answer: its times merged into the leaf's, in one modify.
	got := ChangeOf(fsm.Write{Key: read.DN, From: fsm.Merging, To: fsm.Merged, State: "20121002T010500Z", ReturnValue: &rc},
		exec, &Report{Times: []string{"progress: y", "merge: 0.2"}})
	want := ModeChange{DN: read.DN, From: "merging", To: "merged", State: "20121002T010500Z", ReturnValue: &rc,
		ExecutionTime: []string{"snapshot: 1.8", "downtime: 2.9", "progress: y", "merge: 0.2"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("answer:\n%+v\nwant\n%+v", got, want)
	}
	// A claim swaps from a pending request only.
	claim, _ := fsm.Claim(fsm.Leaf{Key: read.DN, Mode: fsm.Merge, State: fsm.Pending})
	if c := ChangeOf(claim, exec, nil); c.FromState != fsm.Pending || c.ExecutionTime != nil || c.Extra != nil {
		t.Errorf("claim: %+v", c)
	}
	// The control side's verdict keeps the backup record and says why.
	w := fsm.Fail(fsm.Leaf{Key: read.DN, Mode: fsm.Snapshotting}, 255, "20121002T020000Z", "snapshotting for 1h")
	c := ChangeOf(w, exec, nil)
	if ParseBackupRecord(c.ExecutionTime) == nil || *ParseBackupRecord(c.ExecutionTime) != 255 ||
		!reflect.DeepEqual(c.Extra[AttrDescription], []string{"failed: snapshotting for 1h"}) {
		t.Errorf("deadline: %+v", c)
	}
	// A restore's outcome replaces the differences it published.
	w = fsm.Fail(fsm.Leaf{Key: read.DN, Mode: fsm.Restoring, Backup: &rc}, 255, "20121002T020000Z", "x")
	c = ChangeOf(w, exec, nil)
	if r := ParseRestoreRecord(c.Extra[AttrDescription]); r == nil || r.Result != "failed" || r.Step != "restore" {
		t.Errorf("restore: %+v", c)
	}
	// A report may publish or clear the description.
	c = ChangeOf(fsm.Complete(fsm.Leaf{Key: read.DN, Mode: fsm.Restoring}, 0, "20121002T020000Z"), exec, &Report{SetDescription: true})
	if v, ok := c.Extra[AttrDescription]; !ok || v != nil {
		t.Errorf("clear: %+v", c)
	}
}

func TestRestoreDiffRecords(t *testing.T) {
	desc := append(FormatRestoreDiff([]string{"VM sstMemory: backup \"1\", now \"2\""}), "lastRestore: done 0 in restore at 20121002T010000Z")
	got := ParseRestoreDiff(desc)
	want := []string{"1 difference(s)", "VM sstMemory: backup \"1\", now \"2\""}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q", got)
	}
	if ParseRestoreDiff([]string{"lastRestore: done 0 in restore at x"}) != nil {
		t.Fatal("differences read from a record")
	}
}
