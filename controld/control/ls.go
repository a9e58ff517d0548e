package control

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Backup is one leaf of a VM as `controld ls` lists it.
type Backup struct {
	Leaf        string    // the leaf's ou: the planned time in UTC
	DN          string    //
	Planned     time.Time // zero when the name is not a time
	Mode        string
	State       string
	ReturnValue int
	// SizeBytes is the retainBytes the node reported: the bytes it moved to
	// the backup directory. -1 when it reported none (not retained yet).
	SizeBytes int64
	// LogicalBytes is the retainLogicalBytes of a backup in chunks storage:
	// the size of its disks and state, of which it added SizeBytes to the
	// store. 0 for a whole copy.
	LogicalBytes int64
	// Duration is the node's snapshot, merge and retain times added up;
	// Downtime is how long the VM was paused for its snapshot.
	Duration, Downtime time.Duration
	// Steps holds every "name: seconds" the node reported, restore steps too.
	Steps map[string]float64
	// LastRestore is the leaf's record of its last restore ("failed 22 in
	// unretainSmallFiles at ...: cannot lock machine"), "" if none.
	LastRestore string
}

// backupSteps are the steps whose times make up a backup's duration
// ("downtime" is part of "snapshot").
var backupSteps = []string{"snapshot", "merge", "retain"}

// ParseExecutionTimes reads sstProvisioningExecutionTime values, as the node
// writes them: "snapshot: 5.097" (seconds) and "retainBytes: 75316594".
// Values that are neither are skipped.
func ParseExecutionTimes(vals []string) (seconds map[string]float64, bytes map[string]int64) {
	seconds, bytes = map[string]float64{}, map[string]int64{}
	for _, v := range vals {
		name, num, ok := strings.Cut(v, ":")
		name, num = strings.TrimSpace(name), strings.TrimSpace(num)
		if !ok || name == "" || name == ldapschema.ExecBackupReturnValue {
			continue
		}
		if strings.HasSuffix(name, "Bytes") {
			if n, err := strconv.ParseInt(num, 10, 64); err == nil {
				bytes[name] = n
			}
			continue
		}
		if f, err := strconv.ParseFloat(num, 64); err == nil {
			seconds[name] = f
		}
	}
	return seconds, bytes
}

func secondsDuration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// backupOf reads a leaf entry; it is lenient, since a listing must show a
// leaf with a malformed name too.
func backupOf(e *ldap.Entry) Backup {
	b := Backup{DN: e.DN, SizeBytes: -1}
	if dn, err := ldap.ParseDN(e.DN); err == nil && len(dn.RDNs) > 0 && len(dn.RDNs[0].Attributes) == 1 {
		b.Leaf = dn.RDNs[0].Attributes[0].Value
	}
	if t, err := fsm.ParseTime(b.Leaf); err == nil {
		b.Planned = t
	}
	b.Mode = e.GetAttributeValue(ldapschema.AttrMode)
	b.State = e.GetAttributeValue(ldapschema.AttrState)
	b.ReturnValue = atoiOr(e.GetAttributeValue(ldapschema.AttrReturnValue), int(ldapschema.RCUndefined))
	secs, bytes := ParseExecutionTimes(e.GetAttributeValues(ldapschema.AttrExecutionTime))
	if n, ok := bytes["retainBytes"]; ok {
		b.SizeBytes = n
	}
	b.LogicalBytes = bytes["retainLogicalBytes"]
	for _, s := range backupSteps {
		b.Duration += secondsDuration(secs[s])
	}
	b.Downtime = secondsDuration(secs["downtime"])
	if len(secs) > 0 {
		b.Steps = secs
	}
	if r := ldapschema.ParseRestoreRecord(e.GetAttributeValues(ldapschema.AttrDescription)); r != nil {
		b.LastRestore = r.String()
	}
	return b
}

// ListBackups returns the leaves of vm, oldest first: every backup, failed,
// running, excluded VM's or not.
func ListBackups(store *ldapschema.Store, vm string) ([]Backup, error) {
	if err := ldapschema.SafeName(vm); err != nil {
		return nil, fmt.Errorf("VM name %q: %w", vm, err)
	}
	if _, err := store.Get(store.Tree.VM(vm), "1.1"); err != nil {
		if errors.Is(err, ldapschema.ErrNotFound) {
			return nil, fmt.Errorf("%s: %w", vm, ErrUnknownVM)
		}
		return nil, err
	}
	es, err := store.Search(store.Tree.VMBackup(vm), ldap.ScopeSingleLevel,
		"(objectClass="+ldapschema.ClassProvisioning+")", []string{"*"})
	if err != nil && !errors.Is(err, ldapschema.ErrNotFound) {
		return nil, err
	}
	out := make([]Backup, 0, len(es))
	for _, e := range es {
		out = append(out, backupOf(e))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Leaf < out[j].Leaf })
	return out, nil
}

// ListSchedule reads the VMs and backup configurations and returns every
// VM's plan with its next run after now, soonest first (unscheduled VMs
// last), as the scheduler would compute it with cron fields read in loc.
func ListSchedule(store *ldapschema.Store, loc *time.Location, now time.Time) ([]Plan, error) {
	if loc == nil {
		loc = time.Local
	}
	es, err := store.Search(store.Tree.Virtualization(), ldap.ScopeWholeSubtree,
		"(|(objectClass="+ldapschema.ClassVirtualMachine+")(objectClass="+ldapschema.ClassBackup+"))", []string{"*"})
	if err != nil {
		return nil, err
	}
	v := newView(store.Tree, loc)
	for _, e := range es {
		v.put(e)
	}
	out := make([]Plan, 0, len(v.vms))
	for _, vm := range v.names() {
		p, _ := v.plan(vm)
		if p.Status == PlanScheduled {
			p.Next = p.Schedule.Next(now)
		}
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Next, out[j].Next
		if a.IsZero() != b.IsZero() {
			return b.IsZero()
		}
		return a.Before(b)
	})
	return out, nil
}
