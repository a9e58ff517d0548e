package fsm

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Pending is the State of a request the node has not answered yet
// (sstProvisioningState "0"); an answered step's State is a stamp.
const Pending = "0"

// TimeLayout is the form of leaf names (ou=20121002T010000Z) and State
// stamps: ISO 8601 basic format, always UTC.
const TimeLayout = "20060102T150405Z"

// FormatTime renders t in UTC as TimeLayout. Sub-second parts are dropped.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeLayout) }

// ErrBadTime is wrapped by ParseTime's errors.
var ErrBadTime = errors.New("not a time of the form YYYYMMDDThhmmssZ")

// ParseTime reads a TimeLayout value strictly: exactly 16 characters, digits
// where digits belong and a real calendar date. The result is in UTC.
func ParseTime(s string) (time.Time, error) {
	if len(s) != len(TimeLayout) {
		return time.Time{}, fmt.Errorf("fsm: time %q: %w", s, ErrBadTime)
	}
	for i := 0; i < len(s); i++ {
		c, l := s[i], TimeLayout[i]
		digit := l >= '0' && l <= '9'
		if digit && (c < '0' || c > '9') || !digit && c != l {
			return time.Time{}, fmt.Errorf("fsm: time %q: %w", s, ErrBadTime)
		}
	}
	t, err := time.Parse(TimeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("fsm: time %q: %w: %v", s, ErrBadTime, err)
	}
	return t.UTC(), nil
}

// Leaf is one backup iteration of one VM as read from the directory.
type Leaf struct {
	Key  string // opaque identity, e.g. the DN; copied into every Write
	VM   string // the VM's name (sstVirtualMachine)
	Name string // the leaf's ou, its planned UTC time
	Host string // the VM's sstNode
	Mode Mode
	// State is Pending for a request, else the UTC stamp of the last finished step.
	State       string
	ReturnValue int
	// ReturnMissing is set when the entry has no sstProvisioningReturnValue.
	// It is inverted so that the zero Leaf reads like every entry the seed
	// shows; an answer without a value is treated as a failure, not a success.
	ReturnMissing bool
	// Backup is the record of the backup's own return value, kept through
	// restores; nil on leaves without one (older leaves, the seed's LDIF).
	Backup *int
	// LastRestore is the record of the leaf's last restore, or nil.
	LastRestore *RestoreOutcome
	// Since is when the control side saw the leaf enter its mode, by its own
	// clock; deadlines count from it (rule 10). Zero where no deadline applies.
	Since time.Time
}

// ReturnWrongState is the return value the control side writes when an answer
// came without one: the web UI's code 18, "wrong state information".
const ReturnWrongState = 18

// failed reports whether l's answer is anything but a clean 0, and its code.
func (l Leaf) failed() (int, bool) {
	if l.ReturnMissing {
		return ReturnWrongState, true
	}
	return l.ReturnValue, l.ReturnValue != 0
}

// Write is one change to one leaf, to be applied as a compare-and-swap: only
// if the leaf's mode is still From (see the ordering rules in the package doc).
type Write struct {
	Key      string
	From, To Mode
	// State is Pending, a stamp, or "" to leave the attribute as it is.
	State string
	// ReturnValue is nil to leave the attribute as it is.
	ReturnValue *int
	// Remove deletes the entry instead of modifying it; To is then Absent.
	Remove bool
	// Backup and LastRestore replace the leaf's records (see BackupOutcome);
	// nil leaves them as they are.
	Backup      *int
	LastRestore *RestoreOutcome
	// IfState narrows the compare-and-swap to a leaf whose State is still
	// IfState (a claim takes only a pending request); "" is any State.
	IfState string
	// Reason says why, for logs and transcripts.
	Reason string
	// Note is what the leaf itself should tell its reader about a failure
	// the control side decided (a deadline, a vanished host): the node left
	// no word. ldapschema says where it is kept.
	Note string
}

// Check checks w against the table for side.
func (w Write) Check(side Side) error { return Check(side, w.From, w.To) }

// String renders w on one line for logs and test transcripts.
func (w Write) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s -> %s", w.Key, w.From, w.To)
	if w.Remove {
		b.WriteString(" remove")
	}
	if w.State != "" {
		fmt.Fprintf(&b, " state=%s", w.State)
	}
	if w.ReturnValue != nil {
		fmt.Fprintf(&b, " rv=%d", *w.ReturnValue)
	}
	if w.Backup != nil {
		fmt.Fprintf(&b, " backup=%d", *w.Backup)
	}
	if w.LastRestore != nil {
		fmt.Fprintf(&b, " restore=[%s]", w.LastRestore)
	}
	if w.IfState != "" {
		fmt.Fprintf(&b, " if-state=%s", w.IfState)
	}
	if w.Reason != "" {
		fmt.Fprintf(&b, " (%s)", w.Reason)
	}
	if w.Note != "" && w.Note != w.Reason {
		fmt.Fprintf(&b, " note=%q", w.Note)
	}
	return b.String()
}

func intp(v int) *int { return &v }

// Transition builds the Write for a move the control side or an operator
// decides by itself (start a backup, go on with or cancel a restore, ask
// for a delete). The node never uses it: it has Claim and Complete.
// Requests get State Pending; other modes get stamp; a new leaf also gets
// ReturnValue 0, as the seed's first step writes it.
func Transition(side Side, l Leaf, to Mode, stamp string) (Write, error) {
	if side == Node {
		return Write{}, fmt.Errorf("fsm: the node side writes through Claim and Complete: %w", &TransitionError{side, l.Mode, to})
	}
	if err := Check(side, l.Mode, to); err != nil {
		return Write{}, err
	}
	w := Write{Key: l.Key, From: l.Mode, To: to, Reason: fmt.Sprintf("by %s", side)}
	switch {
	case to == Absent:
		w.Remove = true
	case to.IsRequest():
		w.State = Pending
	default:
		w.State = stamp
	}
	if l.Mode == Absent {
		w.ReturnValue = intp(0)
	}
	return w, nil
}

// StartRestore is Transition(Operator, l, UnretainSmallFiles, stamp) once
// RestoreMayStart agrees. The write also records the backup's return value
// if the leaf has no record yet, while ReturnValue still holds it.
func StartRestore(l Leaf, vmLeaves []Leaf, stamp string) (Write, error) {
	if err := RestoreMayStart(l, vmLeaves); err != nil {
		return Write{}, err
	}
	w, err := Transition(Operator, l, UnretainSmallFiles, stamp)
	if err != nil {
		return Write{}, err
	}
	if rc, ok := l.BackupOutcome(); ok && l.Backup == nil {
		w.Backup = intp(rc)
	}
	// Only the finished leaf that was read: a restore closed and started
	// again meanwhile has another State, and its outcome must be seen first.
	w.IfState = l.State
	return w, nil
}

// Batches groups leaves into the batches Reconcile expects: same Name, same
// Host. Batches come ordered by Host then Name, leaves inside by VM then Key.
func Batches(leaves []Leaf) [][]Leaf {
	type id struct{ host, name string }
	by := make(map[id][]Leaf)
	var ids []id
	for _, l := range leaves {
		k := id{l.Host, l.Name}
		if _, ok := by[k]; !ok {
			ids = append(ids, k)
		}
		by[k] = append(by[k], l)
	}
	sort.Slice(ids, func(i, j int) bool {
		if ids[i].host != ids[j].host {
			return ids[i].host < ids[j].host
		}
		return ids[i].name < ids[j].name
	})
	out := make([][]Leaf, 0, len(ids))
	for _, k := range ids {
		out = append(out, sortLeaves(by[k]))
	}
	return out
}

// sortLeaves returns a copy ordered by VM then Key, so that "the first VM"
// means the same thing on every call.
func sortLeaves(in []Leaf) []Leaf {
	out := append([]Leaf(nil), in...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].VM != out[j].VM {
			return out[i].VM < out[j].VM
		}
		return out[i].Key < out[j].Key
	})
	return out
}

// String renders l on one line for logs and test transcripts.
func (l Leaf) String() string {
	rv := strconv.Itoa(l.ReturnValue)
	if l.ReturnMissing {
		rv = "none"
	}
	out := fmt.Sprintf("%s %s %s: %s state=%s rv=%s", l.Host, l.Name, l.VM, l.Mode, l.State, rv)
	if l.Backup != nil {
		out += fmt.Sprintf(" backup=%d", *l.Backup)
	}
	if l.LastRestore != nil {
		out += fmt.Sprintf(" restore=[%s]", l.LastRestore)
	}
	return out
}
