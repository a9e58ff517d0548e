package ldapschema

import (
	"reflect"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

func TestLeafRecordsRoundTrip(t *testing.T) {
	r := RestoreRecord{Result: "failed", Code: 22, Step: "unretainSmallFiles", At: "20121002T010103Z"}
	e := ldap.NewEntry("ou=20121001T010000Z,ou=backup,sstVirtualMachine=web,ou=virtual machines,ou=virtualization,ou=services,o=stepping-stone,c=ch",
		map[string][]string{
			AttrMode: {"finished"}, AttrState: {"20121002T010103Z"}, AttrReturnValue: {"0"},
			AttrExecutionTime: SetExecutionValue([]string{"snapshot: 1.2", "backupReturnValue: 7"}, FormatBackupRecord(0)),
			AttrDescription:   {"restore: 1 difference(s)", FormatRestoreRecord(r)},
		})
	tree := testTree
	l, err := ParseLeaf(tree, e)
	if err != nil {
		t.Fatal(err)
	}
	if l.Backup == nil || *l.Backup != 0 || len(l.ExecutionTime) != 2 {
		t.Errorf("backup record: %v %v", l.Backup, l.ExecutionTime)
	}
	if l.LastRestore == nil || !reflect.DeepEqual(*l.LastRestore, r) {
		t.Errorf("restore record: %+v", l.LastRestore)
	}
	if got := FormatRestoreRecord(r); got != "lastRestore: failed 22 in unretainSmallFiles at 20121002T010103Z: cannot lock machine" {
		t.Errorf("FormatRestoreRecord = %q", got)
	}
	// The seed's leaves have neither record.
	if ParseBackupRecord([]string{"snapshot: 5.108", "downtime: 3"}) != nil || ParseRestoreRecord([]string{"restore: x"}) != nil {
		t.Error("a record read where there is none")
	}
}
