package daemon

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/internal/workqueue"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// The kinds of reconcile failure, as logged and told to OnReconcileError.
const (
	KindError    = "error"    // requeued with backoff
	KindPanic    = "panic"    // recovered, requeued with backoff
	KindTerminal = "terminal" // workqueue.Terminal: reported once, not retried
)

// Options configures a Runtime over keys of type K.
type Options[K comparable] struct {
	Store *ldapschema.Store
	Log   logrus.FieldLogger // default logrus.StandardLogger()
	Now   func() time.Time   // the lease's clock; default time.Now
	// Lease, when set, is taken before anything else (standing by while
	// another holder has it), renewed while running and released at the end.
	// When another holder takes it, Run stops and returns LeaseLost.
	Lease     *ldapschema.Lease
	LeaseLost error
	// Watch is the subtree followed into the cache (Base, Filter, Attrs);
	// its OnError is the runtime's, which logs and calls OnWatchError.
	Watch        ldapschema.WatchOptions
	OnWatchError func(error)
	// Keys turns an applied cache event into the keys to reconcile. For
	// EventSynced it returns every key (a resync re-queues everything).
	Keys func(ldapschema.Event) []K
	// Reconcile decides for one key from the cache as it is now.
	Reconcile func(ctx context.Context, key K) error
	Workers   int // default 1
	// Queue sets the backoff (and a test's clock); OnError is the runtime's.
	Queue workqueue.Options[K]
	// OnReconcileError is told the kind of every failed reconcile (metrics).
	OnReconcileError func(kind string)
	// Background runs next to the workers, once the lease is held; Run
	// waits for each to return after ctx ends.
	Background []func(ctx context.Context)
}

// Runtime is one daemon's lease, watch, cache and queue.
type Runtime[K comparable] struct {
	o     Options[K]
	cache *ldapschema.Cache
	queue *workqueue.Queue[K]
}

// New returns a runtime; Run starts it.
func New[K comparable](o Options[K]) *Runtime[K] {
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Workers < 1 {
		o.Workers = 1
	}
	r := &Runtime[K]{o: o, cache: ldapschema.NewCache()}
	qo := o.Queue
	qo.OnError = r.failed
	r.queue = workqueue.New(qo)
	return r
}

// Cache is what the daemon sees of the directory; entries carry string
// values only (see compact).
func (r *Runtime[K]) Cache() *ldapschema.Cache { return r.cache }

// Queue is the work queue the workers take keys from; a daemon adds to it
// outside events (deadlines, its own goroutines).
func (r *Runtime[K]) Queue() *workqueue.Queue[K] { return r.queue }

// Apply puts ev into the cache the way the watch does.
func (r *Runtime[K]) Apply(ev ldapschema.Event) { r.cache.Apply(compact(ev)) }

// Sync fills the cache once from a plain search of the watched subtree, as
// the watch's first refresh would, without watching on (tests that drive
// reconcile themselves).
func (r *Runtime[K]) Sync() error {
	w := r.o.Watch
	entries, err := r.o.Store.Search(w.Base, ldap.ScopeWholeSubtree, w.Filter, w.Attrs)
	if err != nil {
		return err
	}
	for _, e := range entries {
		r.Apply(ldapschema.Event{Kind: ldapschema.EventPut, DN: e.DN, Entry: e})
	}
	return nil
}

// Run takes the lease if there is one, then watches and reconciles until ctx
// is done or the lease is lost (then it returns LeaseLost).
func (r *Runtime[K]) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	goWait := func(fn func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); fn(ctx) }()
	}
	if l := r.o.Lease; l != nil {
		if err := l.Wait(ctx, r.o.Now, r.leaseLog); err != nil {
			return err
		}
		// Deferred before wg.Wait, so it runs after it: released only once
		// every goroutine that may write has returned.
		defer l.Release()
		goWait(func(ctx context.Context) { l.Keep(ctx, r.o.Now, r.leaseLog, func() { cancel(r.o.LeaseLost) }) })
	}
	defer wg.Wait()

	r.cache.OnEvent(r.enqueue)
	for _, fn := range r.o.Background {
		goWait(fn)
	}
	goWait(r.watch)
	r.work(ctx)
	err := context.Cause(ctx)
	cancel(nil) // the queue may have been shut down from elsewhere
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func (r *Runtime[K]) watch(ctx context.Context) {
	w := r.o.Watch
	w.OnError = func(err error) {
		r.o.Log.WithError(err).Warn("directory watch broken, resuming")
		if r.o.OnWatchError != nil {
			r.o.OnWatchError(err)
		}
	}
	if err := r.o.Store.Watch(ctx, w, r.Apply); err != nil {
		r.o.Log.WithError(err).Error("watch ended")
	}
}

func (r *Runtime[K]) enqueue(ev ldapschema.Event) {
	for _, k := range r.o.Keys(ev) {
		r.queue.Add(k)
	}
}

// work runs the workers until ctx is done or the queue is shut down.
func (r *Runtime[K]) work(ctx context.Context) {
	r.queue.Run(ctx, r.o.Workers, r.o.Reconcile)
}

// failed is the queue's error callback: a failure is logged and counted,
// never dropped.
func (r *Runtime[K]) failed(key K, err error, retry bool) {
	log := r.o.Log.WithField("key", key).WithError(err)
	var pe *workqueue.PanicError
	kind := KindError
	switch {
	case errors.As(err, &pe):
		kind = KindPanic
		log.WithField("stack", string(pe.Stack)).Error("reconcile panicked; recovered, retrying")
	case !retry:
		kind = KindTerminal
		log.Error("reconcile failed; not retried")
	default:
		log.Warn("reconcile failed; retrying")
	}
	if r.o.OnReconcileError != nil {
		r.o.OnReconcileError(kind)
	}
}

// leaseLog writes the lease's events to the daemon's log.
func (r *Runtime[K]) leaseLog(msg, holder string, until time.Time, err error) {
	f := r.o.Log.WithField("lease", r.o.Lease.DN)
	if holder != "" {
		f = f.WithFields(logrus.Fields{"holder": holder, "until": until})
	}
	if err != nil {
		f.WithError(err).Warn(msg)
		return
	}
	f.Info(msg)
}
