package control

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/daemon"
	"github.com/stoneycloud/stoney-conductor/internal/workqueue"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Options configures a Controller.
type Options struct {
	Store   *ldapschema.Store
	Log     logrus.FieldLogger
	Workers int              // batches reconciled at once (default 4)
	Now     func() time.Time // default time.Now
	// OnWrite is told about every write the controller made (metrics, tests),
	// leaves it created included (From Absent).
	OnWrite func(w fsm.Write)
	// OnWatchError is told about every broken watch session (metrics).
	OnWatchError func(error)
	// OnReconcileError is told the kind (daemon.KindError, KindPanic,
	// KindTerminal) of every failed reconcile (metrics); each is logged too.
	OnReconcileError func(kind string)
	// Nightly, when set, turns on backups on the directory's schedules,
	// catch-up of missed runs and retention (see NightlyOptions).
	Nightly *NightlyOptions
	// MaxConcurrentPerHost caps the leaves of one host between snapshot and
	// retained; the others wait in initialized. 0 means no cap.
	MaxConcurrentPerHost int
	// Limits say how long a leaf may wait in a mode (default DefaultLimits);
	// NodeTimeout how long after its lease expired a host counts as gone
	// (default 2m). LeaseTTL is controld's own lease (default 30s); Holder
	// names this process in it. NoLease runs without one (tests of races).
	Limits      fsm.Limits
	NodeTimeout time.Duration
	LeaseTTL    time.Duration
	Holder      string
	NoLease     bool
}

// Controller advances the leaves of all VMs.
type Controller struct {
	o     Options
	tree  ldapschema.Tree
	rt    *daemon.Runtime[queueKey]
	cache *ldapschema.Cache          // rt's
	queue *workqueue.Queue[queueKey] // rt's
	idx   *index
	sched *Scheduler        // nil unless Options.Nightly
	limit *hostLimit        // nil unless Options.MaxConcurrentPerHost
	lease *ldapschema.Lease // nil with Options.NoLease
	alive liveness

	seenMu sync.Mutex
	seen   map[string]seenRec // when a leaf was first seen as it is (deadlines)
}

// New returns a controller; Run starts it.
func New(o Options) *Controller {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Now == nil && o.Nightly != nil && o.Nightly.Clock != nil {
		o.Now = o.Nightly.Clock.Now
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.Limits == nil {
		o.Limits = DefaultLimits
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = 2 * time.Minute
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.Holder == "" {
		o.Holder = defaultHolder()
	}
	c := &Controller{o: o, tree: o.Store.Tree}
	c.idx = newIndex(c.tree)
	c.seen = map[string]seenRec{}
	if !o.NoLease {
		c.lease = &ldapschema.Lease{Store: o.Store, DN: c.tree.ControldLease(), Holder: o.Holder, TTL: o.LeaseTTL, Skew: 2 * time.Second}
	}
	if o.Nightly != nil {
		c.sched = newScheduler(c, *o.Nightly)
	}
	if o.MaxConcurrentPerHost > 0 {
		c.limit = newHostLimit(o.MaxConcurrentPerHost)
	}
	background := []func(context.Context){c.watchNodes}
	if c.sched != nil {
		background = append(background, c.sched.run)
	}
	c.rt = daemon.New(daemon.Options[queueKey]{
		Store: o.Store, Log: o.Log, Now: o.Now,
		Lease: c.lease, LeaseLost: ErrLeaseLost,
		Watch:        ldapschema.WatchOptions{Base: c.tree.Virtualization(), Filter: WatchFilter, Attrs: WatchAttrs},
		OnWatchError: o.OnWatchError,
		Keys:         c.onEvent, Reconcile: c.reconcile, Workers: o.Workers,
		OnReconcileError: o.OnReconcileError,
		Background:       background,
	})
	c.cache, c.queue = c.rt.Cache(), c.rt.Queue()
	return c
}

// Cache exposes what the controller sees of the directory. Its entries carry
// string values only.
func (c *Controller) Cache() *ldapschema.Cache { return c.cache }

// WatchFilter selects the leaves, the VM entries (which host runs a VM, in
// which pool) and the backup configurations at VM, pool and global level
// (schedules, iterations, exclusion), all below Tree.Virtualization().
const WatchFilter = "(|(objectClass=" + ldapschema.ClassProvisioning + ")(objectClass=" + ldapschema.ClassVirtualMachine +
	")(objectClass=" + ldapschema.ClassBackup + "))"

// WatchAttrs are the attributes the controller reads of the watched entries
// (modifyTimestamp for deadlines): a VM entry sends three of its twenty-odd,
// which makes loading a big directory much cheaper.
var WatchAttrs = append([]string{
	ldapschema.AttrObjectClass, ldapschema.AttrOU, "modifyTimestamp",
	ldapschema.AttrMode, ldapschema.AttrState, ldapschema.AttrReturnValue, ldapschema.AttrExecutionTime,
	ldapschema.AttrVirtualMachine, ldapschema.AttrNode, ldapschema.AttrVirtualMachinePool,
}, BackupConfigAttrs...)

// Run takes controld's lease (unless NoLease), then watches the directory
// and reconciles until ctx is done or the lease is lost (ErrLeaseLost).
func (c *Controller) Run(ctx context.Context) error { return c.rt.Run(ctx) }

// onEvent returns the batches an event touched; the nightly side queues
// retention and the per-host cap's batches itself.
func (c *Controller) onEvent(ev ldapschema.Event) []queueKey {
	var keys []queueKey
	switch ev.Kind {
	case ldapschema.EventPut:
		keys = c.idx.put(ev.Entry)
	case ldapschema.EventDelete:
		keys = c.idx.remove(ev.DN)
	case ldapschema.EventSynced:
		keys = c.idx.keys()
	}
	c.afterEvent(ev, keys)
	return keys
}

// reconcile decides for one batch (the leaves of one name on one host) from the
// leaves as the cache holds them now and the facts controld knows (its
// clock, the node leases, the host's free slots), and applies fsm's writes
// as compare-and-swaps.
func (c *Controller) reconcile(ctx context.Context, key queueKey) error {
	if key.retention {
		return c.retain(key.vm)
	}
	if c.sched != nil && c.sched.held(key) {
		return nil // the scheduler is still creating this batch and queues it when done
	}
	host := key.host
	f := fsm.Facts{Now: c.o.Now(), Limits: c.o.Limits, TimeoutCode: int(TimeoutCode),
		HostGone: c.alive.isDead(host), Slots: fsm.NoCap}
	if c.limit != nil {
		defer c.limit.lock(host)()
		f.Slots = c.limit.free(c, host)
	}
	var batch []fsm.Leaf
	for _, dn := range c.idx.members(key) {
		e, ok := c.cache.Get(dn)
		if !ok {
			continue
		}
		l, ok := c.leafOf(e, host)
		if !ok {
			continue
		}
		if c.limit != nil {
			c.limit.expect(host, &l)
		}
		batch = append(batch, l)
	}
	if len(batch) == 0 {
		return nil
	}
	var retry error
	for _, w := range fsm.Reconcile(batch, f) {
		err := c.apply(w)
		if err == nil && c.limit != nil && w.To == fsm.Snapshot {
			c.limit.admitted(host, w.Key)
		}
		if err != nil {
			if errors.Is(err, ldapschema.ErrConflict) || errors.Is(err, ldapschema.ErrNotFound) {
				// Rule 7: the leaf changed under us; the watch brings the new state.
				continue
			}
			retry = err
		}
	}
	if at, ok := fsm.Wake(batch, f); ok {
		c.queue.AddAfter(key, at.Sub(f.Now)+time.Second)
	}
	return retry
}

// apply writes w through ldapschema, the one translator, against the leaf
// as the cache holds it.
func (c *Controller) apply(w fsm.Write) error {
	log := c.o.Log.WithFields(logrus.Fields{"leaf": w.Key, "from": string(w.From), "to": string(w.To)})
	read, _ := c.cache.Get(w.Key)
	err := c.o.Store.Write(w, ldapschema.ExecutionTimes(read), nil)
	if err != nil {
		return err
	}
	switch {
	case w.Remove:
		log.Info("leaf removed")
	case w.Note != "":
		log.WithField("reason", w.Reason).Warn("leaf failed by controld")
	case w.ReturnValue != nil:
		log.WithField("rc", *w.ReturnValue).Info("mode written")
	default:
		log.Info("mode written")
	}
	if c.o.OnWrite != nil {
		c.o.OnWrite(w)
	}
	return nil
}

// leafOf reads a cached leaf entry for fsm, with Since by controld's clock;
// leaves with an unknown mode are left alone.
func (c *Controller) leafOf(e *ldap.Entry, host string) (fsm.Leaf, bool) {
	l, err := ldapschema.WorkflowLeaf(c.tree, e, host)
	if err != nil {
		c.o.Log.WithField("leaf", e.DN).WithError(err).Debug("leaf with unknown mode ignored")
		return fsm.Leaf{}, false
	}
	l.Since = c.modified(e.DN)
	return l, true
}

// afterEvent is the nightly side of the controller's event handling: plans,
// the per-host cap and retention follow the watch. keys are the batches the
// event touched.
func (c *Controller) afterEvent(ev ldapschema.Event, keys []queueKey) {
	if c.limit != nil {
		c.limit.onEvent(c, ev, keys)
	}
	if c.sched == nil {
		return
	}
	c.sched.onEvent(ev)
	switch ev.Kind {
	case ldapschema.EventPut:
		if isLeaf(ev.Entry) && ev.Entry.GetAttributeValue(ldapschema.AttrMode) == string(fsm.Finished) {
			if vm, _ := leafVM(c.tree, ev.DN); vm != "" {
				c.queue.Add(retentionKey(vm))
			}
		}
	case ldapschema.EventSynced:
		for _, vm := range c.idx.vmsWithLeaves() {
			c.queue.Add(retentionKey(vm))
		}
	}
}
