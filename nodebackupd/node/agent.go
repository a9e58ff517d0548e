package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/daemon"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/workqueue"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// Hypervisor is what the node needs of the VM host. *libvirt.Hypervisor is the
// real one. Every call must be idempotent: after a crash a step runs again.
type Hypervisor interface {
	Domain(name string) (libvirt.DomainInfo, error)
	Snapshot(ctx context.Context, req libvirt.SnapshotRequest) (libvirt.SnapshotResult, error)
	Merge(ctx context.Context, req libvirt.MergeRequest) (libvirt.MergeResult, error)
	Restore(ctx context.Context, req libvirt.RestoreRequest) (libvirt.RestoreResult, error)
}

// Options configures an Agent.
type Options struct {
	Node       string // this host, as the VMs' sstNode names it
	Store      *ldapschema.Store
	Hypervisor Hypervisor
	Log        logrus.FieldLogger
	Workers    int              // leaves worked on at once (default 2)
	Now        func() time.Time // default time.Now
	// OnWatchError is told about every broken watch session (metrics, tests).
	OnWatchError func(error)
	// OnReconcileError is told the kind (daemon.KindError, KindPanic,
	// KindTerminal) of every failed reconcile (metrics); each is logged too.
	OnReconcileError func(kind string)
	// ProgressEvery is how often a long copy writes its progress (default 2s).
	ProgressEvery time.Duration
	// OnStep is told about every answered step (metrics).
	OnStep func(mode string, seconds float64, rc int, times []string)
	// LeaseTTL is how long the host lease (the heartbeat controld watches)
	// holds without renewal (default 30s); Holder names this process in it.
	LeaseTTL time.Duration
	Holder   string
	// StateDir is the node's own directory (root only), where each step
	// keeps its intent record (default /var/lib/stoney-conductor).
	StateDir string
	// Seam is what every host operation of a step passes (tests arm it to
	// crash or fail at an operation); nil runs them unchanged.
	Seam *hostio.Seam
	// Snapshot is how a running VM's memory is saved (default SnapshotLive);
	// LiveBound limits a live save before the guest is paused to finish it
	// (zero: libvirt.DefaultPauseBound).
	Snapshot  SnapshotMode
	LiveBound libvirt.PauseBound
	// Storage is how retain keeps disks (default format.StorageFull); a
	// restore reads each iteration as it was stored, whatever it says.
	Storage format.Storage
	// StoreJobs schedules garbage collection and verify of chunk stores;
	// OnStoreJob is told about each run (metrics).
	StoreJobs  StoreJobs
	OnStoreJob func(root string, j format.StoreJob)
}

// SnapshotMode is how the snapshot step saves a running VM's memory.
type SnapshotMode string

const (
	// SnapshotLive writes the memory while the guest runs and pauses it
	// only for the disk swap and the restore.
	SnapshotLive SnapshotMode = "live"
	// SnapshotSave is the seed's procedure: paused for the whole save.
	SnapshotSave SnapshotMode = "save"
)

// ParseSnapshotMode reads a configured mode; "" is the default, live.
func ParseSnapshotMode(s string) (SnapshotMode, error) {
	switch m := SnapshotMode(s); m {
	case "":
		return SnapshotLive, nil
	case SnapshotLive, SnapshotSave:
		return m, nil
	}
	return "", fmt.Errorf("snapshot mode %q: want %s or %s", s, SnapshotLive, SnapshotSave)
}

// DefaultStateDir holds the intent records unless configured otherwise.
const DefaultStateDir = "/var/lib/stoney-conductor"

// Agent is one node daemon.
type Agent struct {
	o     Options
	tree  ldapschema.Tree
	rt    *daemon.Runtime[string]  // keyed by leaf DN
	cache *ldapschema.Cache        // rt's
	queue *workqueue.Queue[string] // rt's

	vmMu     sync.Mutex
	vmBusy   map[string]*sync.Mutex // one step per VM at a time
	inflight map[string]bool        // leaves this process works on now, under vmMu
	lease    *ldapschema.Lease
}

// watchFilter selects what a node must see: the leaves, and the VM entries that
// say which host runs each VM.
const watchFilter = "(|(objectClass=" + ldapschema.ClassProvisioning + ")(objectClass=" + ldapschema.ClassVirtualMachine + "))"

// New returns an agent; Run starts it.
func New(o Options) *Agent {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 2 * time.Second
	}
	if o.Holder == "" {
		host, _ := os.Hostname()
		o.Holder = fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano()%1e6)
	}
	a := &Agent{
		o:        o,
		tree:     o.Store.Tree,
		vmBusy:   map[string]*sync.Mutex{},
		inflight: map[string]bool{},
		lease: &ldapschema.Lease{Store: o.Store, DN: o.Store.Tree.NodeLease(o.Node), Holder: o.Holder,
			TTL: o.LeaseTTL, Skew: 2 * time.Second},
	}
	// Exactly one nodebackupd works for a host, so resuming its interrupted
	// steps is safe; the lease is also the host's heartbeat. The node reads
	// VM entries whole (ParseVM), so the watch asks for every attribute.
	var background []func(context.Context)
	if o.StoreJobs.enabled() {
		background = append(background, a.runStoreJobs)
	}
	a.rt = daemon.New(daemon.Options[string]{
		Background: background,
		Store:      o.Store, Log: o.Log, Now: o.Now,
		Lease: a.lease, LeaseLost: ErrLeaseLost,
		Watch:        ldapschema.WatchOptions{Base: a.tree.VirtualMachines(), Filter: watchFilter, Attrs: []string{"*"}},
		OnWatchError: o.OnWatchError,
		Keys:         a.onEvent, Reconcile: a.reconcile, Workers: o.Workers,
		Queue:            workqueue.Options[string]{BaseDelay: 500 * time.Millisecond, MaxDelay: 30 * time.Second},
		OnReconcileError: o.OnReconcileError,
	})
	a.cache, a.queue = a.rt.Cache(), a.rt.Queue()
	return a
}

// Cache exposes what the agent sees of the directory (status, tests).
func (a *Agent) Cache() *ldapschema.Cache { return a.cache }

// Run takes the host's lease (standing by while another nodebackupd holds it),
// then watches the directory and works until ctx is done or the lease is lost
// (ErrLeaseLost).
func (a *Agent) Run(ctx context.Context) error { return a.rt.Run(ctx) }

// ErrLeaseLost: another nodebackupd took this host's lease; this one must stop.
var ErrLeaseLost = errors.New("host lease lost to another nodebackupd")

func isLeaf(e *ldap.Entry) bool { return ldapschema.IsLeaf(e) }

// onEvent only names leaves: the worker decides from the entry as it is then.
func (a *Agent) onEvent(ev ldapschema.Event) []string {
	switch ev.Kind {
	case ldapschema.EventPut:
		if isLeaf(ev.Entry) {
			if pending(ev.Entry) || finished(ev.Entry) {
				return []string{ev.DN}
			}
			return nil
		}
		// A VM moved to (or appeared on) this host: its pending leaves are ours now.
		vm := ldapschema.NormalizeDN(a.tree.VM(ev.Entry.GetAttributeValue(ldapschema.AttrVirtualMachine)))
		return a.leaves(func(e *ldap.Entry) bool {
			return (pending(e) || finished(e)) && strings.HasSuffix(ldapschema.NormalizeDN(e.DN), vm)
		})
	case ldapschema.EventSynced:
		// After a start or a reconnect, steps this host left half done are resumed.
		return a.leaves(func(e *ldap.Entry) bool { return pending(e) || finished(e) || running(e) })
	}
	return nil
}

// leaves returns the DNs of the cached leaves that match.
func (a *Agent) leaves(match func(e *ldap.Entry) bool) []string {
	var dns []string
	a.cache.Each(func(e *ldap.Entry) {
		if isLeaf(e) && match(e) {
			dns = append(dns, e.DN)
		}
	})
	return dns
}

// running: a step claimed (by this host) and not answered yet.
func running(e *ldap.Entry) bool {
	m, err := fsm.ParseMode(e.GetAttributeValue(ldapschema.AttrMode))
	return err == nil && m.IsRunning()
}

// pending: a request the control side wrote and nobody has claimed yet.
func pending(e *ldap.Entry) bool {
	m, err := fsm.ParseMode(e.GetAttributeValue(ldapschema.AttrMode))
	_, claimable := fsm.Claim(fsm.Leaf{Mode: m, State: e.GetAttributeValue(ldapschema.AttrState)})
	return err == nil && claimable
}

func finished(e *ldap.Entry) bool {
	return e.GetAttributeValue(ldapschema.AttrMode) == string(fsm.Finished)
}

// step is the work of request m on this node, or nil for a request it
// does not carry out.
func (a *Agent) step(m fsm.Mode) func(context.Context, *job) ([]string, error) {
	return map[fsm.Mode]func(context.Context, *job) ([]string, error){
		fsm.Snapshot: a.snapshot, fsm.Merge: a.merge, fsm.Retain: a.retain, fsm.Delete: a.delete,
		fsm.UnretainSmallFiles: a.unretainSmallFiles, fsm.UnretainLargeFiles: a.unretainLargeFiles,
		fsm.Restore: a.restore,
	}[m]
}

// Sync fills the agent's view of the directory once, as the watch's first
// refresh would, without watching on (tests that drive Reconcile themselves).
func (a *Agent) Sync() error { return a.rt.Sync() }

// Reconcile is one pass of the worker over one leaf, as the queue runs it:
// claim, step, report (or resume a claimed step, or settle a finished
// leaf). A crash harness calls it directly, without lease or watch.
func (a *Agent) Reconcile(ctx context.Context, dn string) error { return a.reconcile(ctx, dn) }

// reconcile handles one leaf: claim it if it is a request for this host, do the
// step, report the outcome. Returning an error requeues with backoff.
func (a *Agent) reconcile(ctx context.Context, dn string) error {
	e, ok := a.cache.Get(dn)
	if !ok || !isLeaf(e) || !(pending(e) || finished(e) || running(e)) {
		return nil
	}
	mode, _ := fsm.ParseMode(e.GetAttributeValue(ldapschema.AttrMode))
	request := mode
	if mode.IsRunning() {
		request = mode.Request()
	}
	stepFn := a.step(request)
	if stepFn == nil && mode != fsm.Finished {
		return nil // not a step this node knows: leave it for one that does
	}
	vmName, _, ok := ldapschema.LeafOwner(a.tree, dn)
	if !ok {
		return nil
	}
	vmEntry, ok := a.cache.Get(a.tree.VM(vmName))
	if !ok || vmEntry.GetAttributeValue(ldapschema.AttrNode) != a.o.Node {
		return nil
	}
	log := a.o.Log.WithFields(logrus.Fields{"vm": vmName, "leaf": dn, "mode": string(mode), "node": a.o.Node})
	// A VM or leaf whose name cannot be used gets an answer instead of being
	// ignored for ever.
	var refuse error
	vm, err := ldapschema.ParseVM(a.tree, vmEntry)
	if err != nil {
		vm = ldapschema.VM{Name: vmName, Node: a.o.Node}
		refuse = failf(ldapschema.RCUnsupportedParameter, "VM entry: %v", err)
	}
	leaf, err := ldapschema.ParseLeaf(a.tree, e)
	if err != nil {
		leaf = ldapschema.Leaf{DN: dn, VM: vmName, Mode: string(mode), State: e.GetAttributeValue(ldapschema.AttrState)}
		if refuse == nil {
			refuse = failf(ldapschema.RCWrongState, "malformed leaf: %v", err)
		}
	}

	lock := a.vmLock(vmName)
	lock.Lock()
	defer lock.Unlock()
	if mode == fsm.Finished {
		if refuse != nil {
			return nil
		}
		return a.tidy(ctx, vm, leaf)
	}
	if !a.begin(dn) {
		return nil // this process works on it already
	}
	defer a.end(dn)

	fl, err := ldapschema.WorkflowLeaf(a.tree, e, vm.Node)
	if err != nil {
		return nil // no mode of the workflow: not ours to answer
	}
	if mode.IsRequest() {
		claim, ok := fsm.Claim(fl)
		if !ok {
			return nil
		}
		// Rule 2 of fsm/doc.go: claim with a compare-and-swap before touching the VM.
		err = a.o.Store.Write(claim, nil, nil)
		if errors.Is(err, ldapschema.ErrConflict) {
			log.Debug("request claimed elsewhere or withdrawn")
			return nil
		}
		if err != nil {
			return err
		}
		log.Info("claimed")
		fl.Mode = claim.To
	} else {
		// Claimed by this host before a crash or a lost connection; this process
		// holds the host lease, so nobody else works on it. The cache may lag
		// behind our own answer: look at the directory itself first.
		fresh, err := a.o.Store.Get(dn, "*")
		if err != nil || fresh.GetAttributeValue(ldapschema.AttrMode) != string(mode) {
			return nil
		}
		e = fresh
		// Record what is true, then redo: every step looks before it acts.
		log.WithFields(a.survey(vm)).Warn("resuming an interrupted step")
	}

	start := a.o.Now()
	var times []string
	var report ldapschema.Report
	err = refuse
	if err == nil {
		var j *job
		j, err = a.prepare(vm, leaf, log)
		if err == nil {
			j.running = fl.Mode
			times, err = stepFn(ctx, j)
			report = j.report
		}
	}
	if transient(err) && a.queue.NumRequeues(dn) < transientRetries {
		// libvirtd or slapd went away mid-step: the leaf stays claimed and the
		// step is resumed (it looks before it acts) once they are back.
		log.WithError(err).Warn("step interrupted by a lost connection; resuming it later")
		return err
	}
	rc := codeOf(err)
	if err != nil {
		log.WithError(err).WithField("rc", int(rc)).Error("step failed")
	} else {
		log.WithField("seconds", a.o.Now().Sub(start).Seconds()).Info("step done")
	}
	if a.o.OnStep != nil {
		a.o.OnStep(string(request), a.o.Now().Sub(start).Seconds(), int(rc), times)
	}
	done := fsm.Complete(fl, int(rc), fsm.FormatTime(a.o.Now()))
	report.Times = times
	return a.report(ctx, e, done, &report, log)
}

// transientRetries bounds how often a step interrupted by a lost connection is
// resumed before it is answered with its code (about a minute and a half of
// backoff); controld's deadline bounds it as well.
const transientRetries = 8

func transient(err error) bool {
	return err != nil && (libvirt.IsTransient(err) || errors.Is(err, ldapschema.ErrUnavailable) ||
		errors.Is(err, errFinishLater))
}

// begin marks a leaf as worked on by this process; false if it already is.
func (a *Agent) begin(dn string) bool {
	a.vmMu.Lock()
	defer a.vmMu.Unlock()
	n := ldapschema.NormalizeDN(dn)
	if a.inflight[n] {
		return false
	}
	a.inflight[n] = true
	return true
}

func (a *Agent) end(dn string) {
	a.vmMu.Lock()
	defer a.vmMu.Unlock()
	delete(a.inflight, ldapschema.NormalizeDN(dn))
}

// report writes the -ed mode, State, ReturnValue and execution times in one
// compare-and-swap (rule 3), retrying while the directory is away: the work is
// done and must not be lost.
func (a *Agent) report(ctx context.Context, e *ldap.Entry, w fsm.Write, r *ldapschema.Report, log logrus.FieldLogger) error {
	backoff := 100 * time.Millisecond
	for {
		err := a.o.Store.Write(w, ldapschema.ExecutionTimes(e), r)
		if err == nil {
			log.WithFields(logrus.Fields{"to": string(w.To), "rc": *w.ReturnValue}).Info("reported")
			return nil
		}
		if errors.Is(err, ldapschema.ErrConflict) || errors.Is(err, ldapschema.ErrNotFound) {
			// Someone (a deadline, an operator) changed the leaf meanwhile; theirs stands.
			log.WithError(err).Warn("leaf changed while working; result not written")
			return nil
		}
		log.WithError(err).Warn("cannot report yet, retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

func (a *Agent) vmLock(vm string) *sync.Mutex {
	a.vmMu.Lock()
	defer a.vmMu.Unlock()
	m, ok := a.vmBusy[vm]
	if !ok {
		m = &sync.Mutex{}
		a.vmBusy[vm] = m
	}
	return m
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
