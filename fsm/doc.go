// Package fsm is the backup workflow of stoney conductor as a pure state
// machine: which mode a backup leaf may move to, who may move it, and what the
// control side writes next. It does no I/O, reads no clock and logs nothing;
// callers hand it leaves as read from the directory and apply the Writes it
// returns. The transition table lives in one place (table.go), built once.
//
// A leaf is one backup iteration of one VM. The control side (controld)
// writes request modes with State "0"; the node running the VM (nodebackupd)
// claims a request with its "-ing" mode and answers with the "-ed" mode, a
// State stamp and a ReturnValue.
//
// The control side's loop, for each batch of leaves (same Name, same Host):
//
//	for _, batch := range fsm.Batches(readLeaves()) {
//		facts := fsm.Facts{Now: now, Limits: limits, HostGone: gone(host), Slots: free(host)}
//		for _, w := range fsm.Reconcile(batch, facts) {
//			applyCAS(w) // a lost race is not an error: the re-read decides
//		}
//		if at, ok := fsm.Wake(batch, facts); ok {
//			lookAgainAt(at)
//		}
//	}
//
// The node's, for each leaf of a VM it runs:
//
//	if w, ok := fsm.Claim(leaf); ok && applyCAS(w) == nil {
//		leaf.Mode = w.To
//		rc := doTheStep(leaf) // idempotent
//		applyCAS(fsm.Complete(leaf, rc, fsm.FormatTime(now)))
//	}
//
// Callers must follow these rules; the workflow is only safe with all of them.
//
//  1. Every Write is applied as a compare-and-swap on sstProvisioningMode:
//     only if the mode is still Write.From (and the State still
//     Write.IfState, where set). In LDAP that is one modify, or for a Remove
//     one delete, carrying an assertion control on the mode (RFC 4528): it
//     fails with assertionFailed if another writer got there first.
//     ldapschema (workflow.go) is the one translator from a Write to that
//     operation and from an entry to a Leaf.
//  2. The node writes the "-ing" mode (Claim) before it touches the VM. If the
//     swap fails it does nothing: someone else claimed or closed the leaf.
//  3. The node writes the "-ed" mode, the State stamp and the ReturnValue in
//     ONE modify (Complete), also swapped from the "-ing" mode. Never in
//     separate writes: the control side acts on the mode alone.
//  4. Node steps are idempotent and check before acting. After a crash the
//     node finds its leaf still "-ing", runs the step again and answers (3).
//  5. If the swap in (3) fails, the control side has given up on the leaf
//     (Overdue). The node leaves the VM consistent and does not write again.
//  6. Only the node named in the VM's sstNode claims the VM's leaves.
//  7. controld applies Writes in the order returned and re-runs Reconcile on
//     what it reads back from the directory, never on what it wrote: another
//     writer may have moved the leaf in between.
//  8. controld reconciles a whole batch at once (Batches), never one leaf:
//     whether a merge may start depends on the other leaves of the batch.
//  9. Operators' hand edits are checked with Check(Operator, ...) and swapped
//     like any other write; StartRestore, ContinueRestore and CancelRestore
//     build the restore's.
//  10. Stamps and now are the caller's (Facts.Now, FormatTime). Deadlines
//     (Limits) count from Leaf.Since, when the caller saw the leaf enter its
//     mode by its own clock, never from State; Reconcile gives up on a leaf
//     past its deadline, or on every waiting leaf of a host that stopped
//     renewing its lease (Facts.HostGone), with Fail, and Wake says when to
//     look again.
//  11. "Is this VM busy?" has one answer, Busy: every backup and restore mode,
//     not finished and not the delete modes. A backup starts only when
//     BackupMayStart agrees; a restore starts, and the node runs each restore
//     step, only when RestoreMayStart agrees.
//  12. A finished leaf's ReturnValue is its backup's. A restore never leaves
//     its own code there: it is closed (Reconcile, Overdue, CancelRestore)
//     with the backup's value put back and its outcome in Write.LastRestore;
//     the backup's value is also kept in Write.Backup, a record restores do
//     not touch. Callers store both records with every Write that has them
//     (ldapschema says where) and read them back into Leaf.
//  13. A host's cap counts the leaves that HoldsSlot, across its batches;
//     the caller passes the free slots (Facts.Slots) and Reconcile hands them
//     out in VM order. Initialized leaves waiting for a slot do not hold their
//     batch's merges back. A snapshot request the caller wrote and has not
//     read back yet counts as written.
//  14. Retention is Expire: of a VM's leaves, keep the n newest good backups
//     and failed leaves only while newer than the oldest kept; never delete a
//     leaf being restored or whose backup's outcome is unknown.
//
// The transcripts in testdata/ show each rule at work, one file a rule or
// two (deadlines.txt, host_cap.txt, retention.txt, busy.txt, ...).
package fsm
