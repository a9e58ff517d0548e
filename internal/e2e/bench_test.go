package e2e

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// BenchmarkHandover measures how long a request waits for its node: from the
// return of the control side's mode write (delete, State 0) until the node's
// compare-and-swap to "deleting" is seen by a watcher. The watcher's own delay
// (about 1 ms) is included, so the figure is an upper bound. Reported as the
// median in ms/handover.
func BenchmarkHandover(b *testing.B) {
	s := newSite(b, env.root)
	name := unique("bench")
	s.addEntries(name, nil, s.config())
	startNode(b, s.host, env.hv)

	seen := make(chan time.Time, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watcher := newStore(b)
	go watcher.Watch(ctx, ldapschema.WatchOptions{
		Base:   watcher.Tree.VM(name),
		Filter: "(" + ldapschema.AttrMode + "=deleting)",
		Attrs:  []string{ldapschema.AttrMode},
	}, func(ev ldapschema.Event) {
		if ev.Kind == ldapschema.EventPut {
			seen <- time.Now()
		}
	})
	const perIteration = 40
	var delays []time.Duration
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := 0; k < perIteration; k++ {
			leaf := fsm.FormatTime(start.Add(time.Duration(n) * time.Second))
			n++
			if err := s.store.Add(ldapschema.NewLeafAddRequest(s.store.Tree, name, leaf, "finished", leaf)); err != nil {
				b.Fatal(err)
			}
			dn := s.store.Tree.Leaf(name, leaf)
			if err := s.store.ChangeMode(ldapschema.ModeChange{DN: dn, From: "finished", To: "delete", State: "0"}); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			select {
			case t1 := <-seen:
				delays = append(delays, t1.Sub(t0))
			case <-time.After(30 * time.Second):
				b.Fatal("the node never claimed the request")
			}
			waitLeaf(b, s.store, dn, time.Minute, modeIs("deleted"))
			if err := s.store.Delete(dn); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	median := delays[len(delays)/2]
	b.ReportMetric(float64(median.Microseconds())/1000, "ms/handover")
	b.ReportMetric(float64(delays[len(delays)*9/10].Microseconds())/1000, "ms/handover-p90")
}
