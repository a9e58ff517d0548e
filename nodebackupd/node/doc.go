// Package node is the node side of stoney conductor: it runs on every KVM host,
// watches the backup leaves of the VMs whose sstNode is this host, claims each
// request (snapshot, merge, retain, delete) with a compare-and-swap to the "-ing"
// mode, does the work through the hypervisor adapter, and reports the "-ed" mode,
// a State timestamp, a return value and execution times in one modify.
//
// The main loop, level-triggered:
//
//	watch leaves and VMs  ─► cache ─► queue(leaf DN)
//	worker: leaf := cache[DN]; if request for our host {claim; step; complete}
//
// A missed or doubled event is harmless: the worker decides from the leaf as it
// is, and the claim is a compare-and-swap, so of several nodes exactly one works.
package node
