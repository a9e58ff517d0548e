package fsm

import (
	"errors"
	"fmt"
	"sort"

	looplab "github.com/looplab/fsm"
)

// Side is who writes a transition. Each side may write only its own edges, so
// a bug on one side cannot forge the other side's answer.
type Side int

const (
	// Control is controld: it creates leaves, writes requests and closes them.
	Control Side = iota
	// Node is nodebackupd on the VM's host: it claims requests and answers them.
	Node
	// Operator is a person, through the web UI or by hand: starts, continues or
	// cancels a restore, asks for a delete, starts a backup out of schedule.
	Operator
)

func (s Side) String() string {
	switch s {
	case Control:
		return "control"
	case Node:
		return "node"
	case Operator:
		return "operator"
	}
	return fmt.Sprintf("Side(%d)", int(s))
}

// ParseSide reads "control", "node" or "operator".
func ParseSide(s string) (Side, error) {
	for _, side := range []Side{Control, Node, Operator} {
		if side.String() == s {
			return side, nil
		}
	}
	return 0, fmt.Errorf("fsm: unknown side %q", s)
}

// ErrNotAllowed is wrapped by every *TransitionError.
var ErrNotAllowed = errors.New("transition not allowed")

// TransitionError says which side tried which edge.
type TransitionError struct {
	Side     Side
	From, To Mode
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("fsm: %s may not move a leaf from %s to %s: %v", e.Side, e.From, e.To, ErrNotAllowed)
}

func (e *TransitionError) Unwrap() error { return ErrNotAllowed }

// edge is one allowed transition and who may write it.
type edge struct {
	side     Side
	from, to Mode
}

// edges is the whole transition table. It is the one place to read who may
// write what; everything else in the package is checked against it.
var edges = func() []edge {
	var es []edge
	add := func(side Side, to Mode, from ...Mode) {
		for _, f := range from {
			es = append(es, edge{side, f, to})
		}
	}

	// The node claims a request and answers it; nothing else.
	for _, s := range steps {
		add(Node, s.running, s.request)
		add(Node, s.done, s.running)
	}

	// The control side drives the backup and closes every answer.
	add(Control, Initialize, Absent)
	add(Control, Initialized, Initialize)
	add(Control, Snapshot, Initialized)
	add(Control, Merge, Snapshotted)
	add(Control, Retain, Merged)
	add(Control, Restore, UnretainedLargeFiles)
	add(Control, Delete, Finished) // retention
	add(Control, Absent, Deleted)  // removes the entry
	// Records the backup's outcome on a leaf that has no record yet; the
	// mode stays, the swap keeps anyone else's move first.
	add(Control, Finished, Finished)
	for _, s := range steps {
		// Success or failure of the last step, or a failure of any other.
		add(Control, Finished, s.done)
		// A request nobody claimed or a claim nobody answered, past its deadline.
		add(Control, Finished, s.request, s.running)
	}

	add(Operator, Initialize, Absent)
	add(Operator, UnretainSmallFiles, Finished)
	add(Operator, UnretainLargeFiles, UnretainedSmallFiles) // go on
	add(Operator, Finished, UnretainedSmallFiles)           // cancel
	add(Operator, Delete, Finished)
	return es
}()

// allowed answers Check: the table as a set.
var allowed = func() map[edge]bool {
	m := make(map[edge]bool, len(edges))
	for _, e := range edges {
		m[e] = true
	}
	return m
}()

// Check returns nil if side may move a leaf from mode from to mode to, and a
// *TransitionError wrapping ErrNotAllowed if not.
func Check(side Side, from, to Mode) error {
	if !allowed[edge{side, from, to}] {
		return &TransitionError{Side: side, From: from, To: to}
	}
	return nil
}

// looplab/fsm earns its place at the table's definition: each side's edges
// are also built into a looplab machine, whose events are named after their
// target mode, and TestTableMachines checks every answer of Check against
// that second reading of the table. Check itself answers from the set
// above: a looplab machine holds a current state, so asking it would take a
// lock and a SetState per question.

// absentState names Absent inside looplab, which reserves no empty name but
// would make an event called "" unreadable in its diagrams.
const absentState = "(absent)"

func stateName(m Mode) string {
	if m == Absent {
		return absentState
	}
	return string(m)
}

// machines is built once; events are named after their target mode.
var machines = func() map[Side]*looplab.FSM {
	srcs := make(map[Side]map[Mode][]string)
	for _, e := range edges {
		if srcs[e.side] == nil {
			srcs[e.side] = make(map[Mode][]string)
		}
		srcs[e.side][e.to] = append(srcs[e.side][e.to], stateName(e.from))
	}
	out := make(map[Side]*looplab.FSM)
	for side, byTo := range srcs {
		tos := make([]string, 0, len(byTo))
		for to := range byTo {
			tos = append(tos, string(to))
		}
		sort.Strings(tos)
		var evs looplab.Events
		for _, to := range tos {
			evs = append(evs, looplab.EventDesc{
				Name: stateName(Mode(to)),
				Src:  byTo[Mode(to)],
				Dst:  stateName(Mode(to)),
			})
		}
		out[side] = looplab.NewFSM(absentState, evs, nil)
	}
	return out
}()
