package ldapschema

import "github.com/stoneycloud/stoney-conductor/fsm"

// FSM is the workflow's view of a parsed leaf, records included; host is the
// VM's node where the caller knows it. Both daemons convert through here.
func (l Leaf) FSM(host string) fsm.Leaf {
	m, _ := fsm.ParseMode(l.Mode)
	return fsm.Leaf{Key: l.DN, VM: l.VM, Name: l.Name, Host: host, Mode: m, State: l.State,
		ReturnValue: l.ReturnValue, Backup: l.Backup, LastRestore: l.LastRestore.Outcome()}
}

// Outcome is the workflow's view of a restore record (nil for none).
func (r *RestoreRecord) Outcome() *fsm.RestoreOutcome {
	if r == nil {
		return nil
	}
	return &fsm.RestoreOutcome{Result: fsm.RestoreResult(r.Result), Code: r.Code, Step: fsm.Mode(r.Step), At: r.At}
}
