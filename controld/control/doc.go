// Package control is the control side of stoney conductor: it watches every
// backup leaf in the directory and advances it by writing the next imperative
// mode (snapshot, merge, retain, finished...) once the node has reported the
// previous step. It never touches a VM; the nodes do.
//
// The main loop, level-triggered (as a Kubernetes controller):
//
//	watch leaves and VMs ─► cache + index ─► queue(batch key = host, leaf name)
//	worker: writes := fsm.Reconcile(leaves of the batch, facts); ldapschema writes each as a compare-and-swap
//
// fsm decides every write (deadlines, vanished hosts, the per-host cap,
// retention included); this package gathers the facts it needs (its clock,
// the node leases, the slots in use per host) and applies what it returns.
//
// Batches keep the seed's order for VMs backed up together on one host: all
// snapshots first, then merge and retain one VM at a time.
package control
