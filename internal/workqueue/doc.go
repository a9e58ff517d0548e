// Package workqueue is the rate-limited, deduplicating queue of keys (any
// comparable type: a leaf's DN, a typed batch key) both daemons feed from
// their directory watch, in the spirit of client-go's workqueue. A watch
// event only enqueues a key; a worker re-reads the entry and decides from
// what it sees, so many events for one key cost one visit.
//
// The guarantees: a key is never handed to two workers at once; a key added
// while it is processed is processed again after Done; a key added many times
// while it waits is processed once. Failures are retried with per-key
// exponential backoff; errors wrapped with Terminal are reported once and not
// retried, so bad input cannot make a hot loop.
//
//	q := workqueue.New(workqueue.Options[string]{ItemTimeout: time.Minute, OnError: logIt})
//	go watch(func(dn string) { q.Add(dn) })
//	q.Run(ctx, 4, func(ctx context.Context, dn string) error {
//		return reconcile(ctx, dn) // wrap bad input with workqueue.Terminal
//	})
//
// Time comes from a Clock, so tests drive AddAfter and backoff with a
// FakeClock instead of sleeping.
package workqueue
