package ldapschema

import (
	"fmt"
	"strconv"
	"strings"
)

// A leaf keeps two records besides its mode (see fsm.BackupOutcome), in
// attributes the schema has, where the web UI does not look:
//
//   - the backup's own return value, as an sstProvisioningExecutionTime value
//     "backupReturnValue: 0". The node keeps execution time values of other
//     steps when it reports, so restores never lose it;
//   - the last restore's outcome, as a description value
//     "lastRestore: failed 22 in unretainSmallFiles at 20121002T010103Z: cannot lock machine".
//     The node replaces description when it publishes a restore's
//     differences, which is when a new restore has begun.

// ExecBackupReturnValue is the key of the backup record in sstProvisioningExecutionTime.
const ExecBackupReturnValue = "backupReturnValue"

// LastRestorePrefix starts the description value of the restore record.
const LastRestorePrefix = "lastRestore: "

// RestoreRecord is the outcome of a leaf's last restore.
type RestoreRecord struct {
	Result string // done, failed, cancelled
	Code   int
	Step   string // the request mode of the step that ended it
	At     string // TimeLayout
}

// FormatBackupRecord renders the backup record.
func FormatBackupRecord(rc int) string { return fmt.Sprintf("%s: %d", ExecBackupReturnValue, rc) }

// ParseBackupRecord finds the backup record among execution time values;
// nil if there is none or it does not read as a number.
func ParseBackupRecord(vals []string) *int {
	for _, v := range vals {
		k, n, ok := strings.Cut(v, ":")
		if !ok || strings.TrimSpace(k) != ExecBackupReturnValue {
			continue
		}
		if rc, err := strconv.Atoi(strings.TrimSpace(n)); err == nil {
			return &rc
		}
	}
	return nil
}

// SetExecutionValue returns vals with the value of v's key replaced by v
// (or v added), the others kept in order.
func SetExecutionValue(vals []string, v string) []string {
	key := func(s string) string { k, _, _ := strings.Cut(s, ":"); return strings.TrimSpace(k) }
	out := make([]string, 0, len(vals)+1)
	for _, o := range vals {
		if key(o) != key(v) {
			out = append(out, o)
		}
	}
	return append(out, v)
}

// FormatRestoreRecord renders r with the meaning of its code for operators.
func FormatRestoreRecord(r RestoreRecord) string {
	s := fmt.Sprintf("%s%s %d in %s at %s", LastRestorePrefix, r.Result, r.Code, r.Step, r.At)
	if r.Code != 0 {
		s += ": " + ReturnCode(r.Code).String()
	}
	return s
}

// ParseRestoreRecord finds the restore record among description values; nil
// if there is none or it is malformed.
func ParseRestoreRecord(desc []string) *RestoreRecord {
	for _, v := range desc {
		rest, ok := strings.CutPrefix(v, LastRestorePrefix)
		if !ok {
			continue
		}
		head, _, _ := strings.Cut(rest, ": ")
		f := strings.Fields(head)
		if len(f) != 6 || f[2] != "in" || f[4] != "at" {
			continue
		}
		code, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		return &RestoreRecord{Result: f[0], Code: code, Step: f[3], At: f[5]}
	}
	return nil
}

// String is the record as ls and status show it.
func (r RestoreRecord) String() string {
	return strings.TrimPrefix(FormatRestoreRecord(r), LastRestorePrefix)
}

// RestoreDiffPrefix starts the description values in which the node
// publishes what a restore would change (after unretainSmallFiles), for the
// operator to decide on: first how many, then one value a difference.
const RestoreDiffPrefix = "restore: "

// FormatRestoreDiff renders a restore's differences as description values.
func FormatRestoreDiff(diff []string) []string {
	out := []string{fmt.Sprintf("%s%d difference(s)", RestoreDiffPrefix, len(diff))}
	for _, d := range diff {
		out = append(out, RestoreDiffPrefix+d)
	}
	return out
}

// ParseRestoreDiff returns the published differences, the count first, as
// FormatRestoreDiff wrote them; nil if none are published.
func ParseRestoreDiff(desc []string) []string {
	var out []string
	for _, v := range desc {
		if d, ok := strings.CutPrefix(v, RestoreDiffPrefix); ok {
			out = append(out, d)
		}
	}
	return out
}
