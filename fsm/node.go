package fsm

import "fmt"

// Claim returns the node's claim on a pending request: the request mode moves
// to its "-ing" mode, State and ReturnValue untouched. ok is false when l
// holds no pending request. The caller applies it as a compare-and-swap from
// Write.From and touches the VM only once that succeeded.
func Claim(l Leaf) (w Write, ok bool) {
	if !l.Mode.IsRequest() || l.State != Pending {
		return Write{}, false
	}
	return Write{
		Key:     l.Key,
		From:    l.Mode,
		To:      l.Mode.Running(),
		IfState: Pending,
		Reason:  "claimed",
	}, true
}

// Complete returns the node's answer for a claimed leaf: the "-ing" mode moves
// to its "-ed" mode with State stamp and ReturnValue rc, all in one modify.
// l must be in a running mode; for any other mode the Write fails
// w.Check(Node), which a caller that did not claim l itself must call.
func Complete(l Leaf, rc int, stamp string) Write {
	reason := "done"
	if rc != 0 {
		reason = fmt.Sprintf("failed with %d", rc)
	}
	return Write{
		Key:         l.Key,
		From:        l.Mode,
		To:          l.Mode.Done(),
		State:       stamp,
		ReturnValue: intp(rc),
		Reason:      reason,
	}
}
