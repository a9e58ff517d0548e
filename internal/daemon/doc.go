// Package daemon is the runtime both daemons share: take the lease (the
// node's mandatory host lease, controld's optional one), keep it and stop
// when it is lost; watch a subtree of the directory into a cache; turn each
// cache event into queue keys; run the workers; shut down cleanly, the
// lease released only once nothing of ours writes any more.
//
// It is level-triggered, like a Kubernetes controller: an event only puts
// keys into the queue, and the end of every watch refresh (at start and
// after each reconnect) enqueues every key, so a missed or doubled event
// is harmless. A daemon supplies what differs: the lease or none, what to
// watch, the event→keys function, the reconcile function and its own
// goroutines (controld's scheduler and node watch).
//
// No reconcile failure is dropped: every error, terminal error and
// recovered panic is logged and told to OnReconcileError (a metric).
//
//	rt := daemon.New(daemon.Options[string]{Store: s, Lease: l, LeaseLost: errLost,
//		Watch: ldapschema.WatchOptions{Base: base, Filter: f, Attrs: attrs},
//		Keys: onEvent, Reconcile: reconcile, Workers: 2})
//	err := rt.Run(ctx)
package daemon
