package fsm

import (
	"errors"
	"fmt"
	"strings"
)

// Mode is the value of a leaf's sstProvisioningMode.
type Mode string

// The modes, spelled exactly as the directory, the web UI and the old daemons spell them.
const (
	// Absent is no mode at all: the leaf entry does not exist (yet, or any more).
	// It appears only as the From of a creation and the To of a removal.
	Absent Mode = ""

	Initialize  Mode = "initialize"
	Initialized Mode = "initialized"

	Snapshot     Mode = "snapshot"
	Snapshotting Mode = "snapshotting"
	Snapshotted  Mode = "snapshotted"
	Merge        Mode = "merge"
	Merging      Mode = "merging"
	Merged       Mode = "merged"
	Retain       Mode = "retain"
	Retaining    Mode = "retaining"
	Retained     Mode = "retained"

	Finished Mode = "finished"

	Delete   Mode = "delete"
	Deleting Mode = "deleting"
	Deleted  Mode = "deleted"

	UnretainSmallFiles    Mode = "unretainSmallFiles"
	UnretainingSmallFiles Mode = "unretainingSmallFiles"
	UnretainedSmallFiles  Mode = "unretainedSmallFiles"
	UnretainLargeFiles    Mode = "unretainLargeFiles"
	UnretainingLargeFiles Mode = "unretainingLargeFiles"
	UnretainedLargeFiles  Mode = "unretainedLargeFiles"
	Restore               Mode = "restore"
	Restoring             Mode = "restoring"
	Restored              Mode = "restored"
)

// step is one hand-over to the node: the control side writes the request,
// the node claims it with the running mode and answers with the done mode.
type step struct{ request, running, done Mode }

var steps = []step{
	{Snapshot, Snapshotting, Snapshotted},
	{Merge, Merging, Merged},
	{Retain, Retaining, Retained},
	{Delete, Deleting, Deleted},
	{UnretainSmallFiles, UnretainingSmallFiles, UnretainedSmallFiles},
	{UnretainLargeFiles, UnretainingLargeFiles, UnretainedLargeFiles},
	{Restore, Restoring, Restored},
}

// Modes lists every mode in workflow order, Absent excluded.
func Modes() []Mode {
	ms := []Mode{Initialize, Initialized}
	for _, s := range steps {
		ms = append(ms, s.request, s.running, s.done)
	}
	return append(ms, Finished)
}

// stepOf indexes steps by each of their three modes.
var stepOf = func() map[Mode]step {
	m := make(map[Mode]step)
	for _, s := range steps {
		m[s.request], m[s.running], m[s.done] = s, s, s
	}
	return m
}()

// ErrUnknownMode is returned by ParseMode for a value that is no mode.
var ErrUnknownMode = errors.New("unknown provisioning mode")

// ParseMode reads a directory value. Names are matched exactly: the old
// daemons compared them case-sensitively, so a near miss is a foreign value.
func ParseMode(s string) (Mode, error) {
	m := Mode(s)
	if m == Initialize || m == Initialized || m == Finished {
		return m, nil
	}
	if _, ok := stepOf[m]; ok {
		return m, nil
	}
	return Absent, fmt.Errorf("%w: %q", ErrUnknownMode, s)
}

// String shows Absent readably; other modes are their directory value.
func (m Mode) String() string {
	if m == Absent {
		return "(absent)"
	}
	return string(m)
}

// IsRequest reports whether m is written by the control side (or an operator)
// with State "0" for the node to pick up.
func (m Mode) IsRequest() bool { s, ok := stepOf[m]; return ok && s.request == m }

// IsRunning reports whether m is a node's claim ("-ing").
func (m Mode) IsRunning() bool { s, ok := stepOf[m]; return ok && s.running == m }

// IsDone reports whether m is a node's answer ("-ed"), which carries a return value.
func (m Mode) IsDone() bool { s, ok := stepOf[m]; return ok && s.done == m }

// IsRestore reports whether the web UI marks a leaf in m as busy restoring:
// its test is a prefix match on "unretain" or "restor", kept here verbatim.
func (m Mode) IsRestore() bool {
	return strings.HasPrefix(string(m), "unretain") || strings.HasPrefix(string(m), "restor")
}

// Request returns the request mode of m's step (merged → merge), or Absent.
func (m Mode) Request() Mode { return stepOf[m].request }

// Running returns the "-ing" mode of m's step (snapshot → snapshotting), or Absent.
func (m Mode) Running() Mode { return stepOf[m].running }

// Done returns the "-ed" mode of m's step (snapshotting → snapshotted), or Absent.
func (m Mode) Done() Mode { return stepOf[m].done }
