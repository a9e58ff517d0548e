package crashtest

import (
	"context"
	"errors"
	"fmt"
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
}

// errHung: a step neither answered nor crashed in time.
var errHung = errors.New("the step neither answered nor crashed")

func (w *world) newLife(seam *hostio.Seam, log logrus.FieldLogger, snapshot node.SnapshotMode) (*life, error) {
	hv, err := libvirt.Open(w.lv.URI)
	if err != nil {
		return nil, err
	}
	hv.SetSeam(seam)
	l := &life{seam: seam, hv: hv, crashed: make(chan string, 1)}
	seam.Crash = func(op string, n int) {
		l.crashed <- fmt.Sprintf("#%d %s", n, op)
		select {} // parked for ever, as a killed process
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.agent = node.New(node.Options{
		Node: host, Store: w.store, Hypervisor: hv, Log: log, Workers: 1,
		StateDir: w.nodeStateDir(), Seam: seam, Holder: "crashtest", Snapshot: snapshot,
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
