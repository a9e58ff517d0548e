package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
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
	// Watch is told about every broken watch session (metrics, tests).
	OnWatchError func(error)
}

// Agent is one node daemon.
type Agent struct {
	o     Options
	tree  ldapschema.Tree
	cache *ldapschema.Cache
	queue *workqueue.Queue

	vmMu   sync.Mutex
	vmBusy map[string]*sync.Mutex // one step per VM at a time
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
	return &Agent{
		o:      o,
		tree:   o.Store.Tree,
		cache:  ldapschema.NewCache(),
		queue:  workqueue.New(workqueue.Options{}),
		vmBusy: map[string]*sync.Mutex{},
	}
}

// Cache exposes what the agent sees of the directory (status, tests).
func (a *Agent) Cache() *ldapschema.Cache { return a.cache }

// Run watches the directory and works until ctx is done.
func (a *Agent) Run(ctx context.Context) error {
	a.cache.OnEvent(a.onEvent)
	go func() {
		err := a.o.Store.Watch(ctx, ldapschema.WatchOptions{
			Base:   a.tree.VirtualMachines(),
			Filter: watchFilter,
			Attrs:  []string{"*"},
			OnError: func(err error) {
				a.o.Log.WithError(err).Warn("directory watch broken, resuming")
				if a.o.OnWatchError != nil {
					a.o.OnWatchError(err)
				}
			},
		}, a.cache.Apply)
		if err != nil {
			a.o.Log.WithError(err).Error("watch ended")
		}
	}()
	go func() {
		<-ctx.Done()
		a.queue.ShutDown()
	}()
	a.queue.Run(ctx, a.o.Workers, a.reconcile)
	return nil
}

func isLeaf(e *ldap.Entry) bool { return hasClass(e, ldapschema.ClassProvisioning) }

func hasClass(e *ldap.Entry, class string) bool {
	for _, c := range e.GetAttributeValues(ldapschema.AttrObjectClass) {
		if strings.EqualFold(c, class) {
			return true
		}
	}
	return false
}

// onEvent only enqueues: the worker decides from the entry as it is then.
func (a *Agent) onEvent(ev ldapschema.Event) {
	switch ev.Kind {
	case ldapschema.EventPut:
		if isLeaf(ev.Entry) {
			if pending(ev.Entry) || finished(ev.Entry) {
				a.queue.Add(ev.DN)
			}
			return
		}
		// A VM moved to (or appeared on) this host: its pending leaves are ours now.
		vm := ev.Entry.GetAttributeValue(ldapschema.AttrVirtualMachine)
		a.enqueuePending(func(leafDN string) bool {
			return strings.HasSuffix(ldapschema.NormalizeDN(leafDN), ldapschema.NormalizeDN(a.tree.VM(vm)))
		})
	case ldapschema.EventSynced:
		a.enqueuePending(func(string) bool { return true })
	}
}

func (a *Agent) enqueuePending(match func(dn string) bool) {
	var dns []string
	a.cache.Each(func(e *ldap.Entry) {
		if isLeaf(e) && (pending(e) || finished(e)) && match(e.DN) {
			dns = append(dns, e.DN)
		}
	})
	for _, dn := range dns {
		a.queue.Add(dn)
	}
}

// pending: a request the control side wrote and nobody has claimed yet.
func pending(e *ldap.Entry) bool {
	m, err := fsm.ParseMode(e.GetAttributeValue(ldapschema.AttrMode))
	return err == nil && m.IsRequest() && e.GetAttributeValue(ldapschema.AttrState) == "0"
}

func finished(e *ldap.Entry) bool {
	return e.GetAttributeValue(ldapschema.AttrMode) == string(fsm.Finished)
}

// steps are the requests this node carries out.
func (a *Agent) step(m fsm.Mode) func(context.Context, *job) ([]string, error) {
	switch m {
	case fsm.Snapshot:
		return a.snapshot
	case fsm.Merge:
		return a.merge
	case fsm.Retain:
		return a.retain
	case fsm.Delete:
		return a.delete
	case fsm.UnretainSmallFiles:
		return a.unretainSmallFiles
	case fsm.UnretainLargeFiles:
		return a.unretainLargeFiles
	case fsm.Restore:
		return a.restore
	}
	return nil
}

// vmOfLeaf returns the VM a leaf DN hangs under, even when the leaf's own name is
// malformed (so the leaf can still be answered with a code).
func (a *Agent) vmOfLeaf(dn string) (string, bool) {
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) < 3 {
		return "", false
	}
	rdn := parsed.RDNs[2].Attributes
	if len(rdn) != 1 || !strings.EqualFold(rdn[0].Type, ldapschema.AttrVirtualMachine) {
		return "", false
	}
	vm := rdn[0].Value
	if ldapschema.NormalizeDN(dn) != ldapschema.NormalizeDN(
		"ou="+ldap.EscapeDN(parsed.RDNs[0].Attributes[0].Value)+","+a.tree.VMBackup(vm)) {
		return "", false
	}
	return vm, true
}

// reconcile handles one leaf: claim it if it is a request for this host, do the
// step, report the outcome. Returning an error requeues with backoff.
func (a *Agent) reconcile(ctx context.Context, dn string) error {
	e, ok := a.cache.Get(dn)
	if !ok || !isLeaf(e) || !(pending(e) || finished(e)) {
		return nil
	}
	mode, _ := fsm.ParseMode(e.GetAttributeValue(ldapschema.AttrMode))
	stepFn := a.step(mode)
	if stepFn == nil && mode != fsm.Finished {
		return nil // not a step this node knows: leave it for one that does
	}
	vmName, ok := a.vmOfLeaf(dn)
	if !ok {
		return nil
	}
	vmEntry, ok := a.cache.Get(a.tree.VM(vmName))
	if !ok {
		return nil
	}
	vm, err := ldapschema.ParseVM(a.tree, vmEntry)
	if err != nil || vm.Node != a.o.Node {
		return nil
	}
	log := a.o.Log.WithFields(logrus.Fields{"vm": vmName, "leaf": dn, "mode": string(mode), "node": a.o.Node})
	if mode == fsm.Finished {
		leaf, err := ldapschema.ParseLeaf(a.tree, e)
		if err != nil {
			return nil
		}
		lock := a.vmLock(vmName)
		lock.Lock()
		defer lock.Unlock()
		return a.tidy(ctx, vm, leaf)
	}

	// Malformed leaf names get an answer instead of being ignored for ever.
	leaf, parseErr := ldapschema.ParseLeaf(a.tree, e)
	if parseErr != nil {
		leaf = ldapschema.Leaf{DN: dn, VM: vmName, Mode: string(mode), State: "0"}
	}
	fl := fsm.Leaf{Key: dn, VM: vmName, Name: leaf.Name, Host: vm.Node, Mode: mode, State: leaf.State, ReturnValue: leaf.ReturnValue}
	claim, ok := fsm.Claim(fl)
	if !ok {
		return nil
	}

	lock := a.vmLock(vmName)
	lock.Lock()
	defer lock.Unlock()

	// Rule 1 of fsm/doc.go: claim with a compare-and-swap before touching the VM.
	err = a.o.Store.ChangeMode(ldapschema.ModeChange{DN: dn, From: string(claim.From), To: string(claim.To), FromState: "0"})
	if errors.Is(err, ldapschema.ErrConflict) {
		log.Debug("request claimed elsewhere or withdrawn")
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("claimed")
	fl.Mode = claim.To

	start := a.o.Now()
	var times []string
	var extra map[string][]string
	if parseErr != nil {
		err = failf(ldapschema.RCWrongState, "malformed leaf: %v", parseErr)
	} else {
		var j *job
		j, err = a.prepare(vm, leaf, log)
		if err == nil {
			times, err = stepFn(ctx, j)
			extra = j.extra
		}
	}
	rc := codeOf(err)
	if err != nil {
		log.WithError(err).WithField("rc", int(rc)).Error("step failed")
	} else {
		log.WithField("seconds", a.o.Now().Sub(start).Seconds()).Info("step done")
	}
	done := fsm.Complete(fl, int(rc), ldapschema.FormatTime(a.o.Now()))
	return a.report(ctx, e, done, times, extra, log)
}

// report writes the -ed mode, State, ReturnValue and execution times in one
// compare-and-swap (rule 2), retrying while the directory is away: the work is
// done and must not be lost.
func (a *Agent) report(ctx context.Context, e *ldap.Entry, w fsm.Write, times []string, extra map[string][]string, log logrus.FieldLogger) error {
	exec := mergeExecutionTimes(e.GetAttributeValues(ldapschema.AttrExecutionTime), times)
	change := ldapschema.ModeChange{
		DN: w.Key, From: string(w.From), To: string(w.To), State: w.State,
		ReturnValue: w.ReturnValue, ExecutionTime: exec, Extra: extra,
	}
	backoff := 100 * time.Millisecond
	for {
		err := a.o.Store.ChangeMode(change)
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

// mergeExecutionTimes keeps earlier steps' values ("snapshot: 1.8") and replaces
// those this step measured again.
func mergeExecutionTimes(old, add []string) []string {
	key := func(v string) string {
		if i := strings.Index(v, ":"); i >= 0 {
			return strings.TrimSpace(v[:i])
		}
		return v
	}
	replaced := map[string]bool{}
	for _, v := range add {
		replaced[key(v)] = true
	}
	var out []string
	for _, v := range old {
		if !replaced[key(v)] {
			out = append(out, v)
		}
	}
	out = append(out, add...)
	if out == nil {
		return nil
	}
	return out
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
