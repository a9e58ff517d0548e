package crashtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/libvirt"
	"github.com/stoneycloud/stoney-conductor/nodebackupd/node"
)

// life is one run of nodebackupd, in this process: its own hypervisor
// connection, its own Agent, the node's state directory, and a seam. When the
// seam ends the life, the goroutine that ran the operation is parked for
// ever: nothing deferred runs, no rollback, no cleanup, no answer, exactly as
// a SIGKILL leaves the host. The next life starts from the same state
// directory and the same directory entries.
type life struct {
	seam    *hostio.Seam
	hv      *libvirt.Hypervisor
	agent   *node.Agent
	ctx     context.Context
	cancel  context.CancelFunc
	crashed chan string // the operation the life ended at
	dead    bool
	onCrash func() // looks at the host as the crash leaves it

	mu   sync.Mutex
	gone bool // the crash happened: every goroutine of the life stops at its next operation
}

// errHung: a step neither answered nor crashed in time.
var errHung = errors.New("the step neither answered nor crashed")

// newLife starts a node life with flow's settings (snapshot mode, storage).
func (w *world) newLife(seam *hostio.Seam, log logrus.FieldLogger, flow *opFlow) (*life, error) {
	hv, err := libvirt.Open(w.lv.URI)
	if err != nil {
		return nil, err
	}
	hv.SetSeam(seam)
	l := &life{seam: seam, hv: hv, crashed: make(chan string, 1)}
	seam.Crash = func(op string, n int) {
		l.mu.Lock()
		l.gone = true
		l.mu.Unlock()
		if l.onCrash != nil {
			l.onCrash()
		}
		l.crashed <- fmt.Sprintf("#%d %s", n, op)
		select {} // parked for ever, as a killed process
	}
	// A kill stops every goroutine, not only the one at the operation (a
	// retain in chunks storage hashes and writes chunks two at a time).
	// The picker comes first: an operation after the crash is not counted.
	stop := func() {
		l.mu.Lock()
		gone := l.gone
		l.mu.Unlock()
		if gone {
			select {}
		}
	}
	if pick := seam.Pick; pick != nil {
		seam.Pick = func(n int, op string) hostio.Fault {
			stop()
			return pick(n, op)
		}
	}
	trace := seam.Trace
	seam.Trace = func(n int, op string) {
		stop()
		if trace != nil {
			trace(n, op)
		}
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.agent = node.New(node.Options{
		Node: host, Store: w.store, Hypervisor: hv, Log: log, Workers: 1,
		StateDir: w.nodeStateDir(), Seam: seam, Holder: "crashtest", Snapshot: flow.snapshot, Storage: flow.storage,
	})
	return l, nil
}

// reconcile is one pass of the node's worker over dn, as after a start: the
// agent reads the directory first. It returns the operation the life ended
// at, if it did.
func (l *life) reconcile(dn string, limit time.Duration) (crashedAt string, err error) {
	if err := l.agent.Sync(); err != nil {
		return "", fmt.Errorf("node's first read of the directory: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- l.agent.Reconcile(l.ctx, dn) }()
	select {
	case err := <-done:
		return "", err
	case at := <-l.crashed:
		l.end()
		return at, nil
	case <-time.After(limit):
		l.end()
		return "", errHung
	}
}

// end stops what the life had running besides a parked goroutine and drops
// its hypervisor connection (libvirt closes it once nothing uses it).
func (l *life) end() {
	if l == nil || l.dead {
		return
	}
	l.dead = true
	l.cancel()
	_ = l.hv.Close()
}
