package control

import (
	"fmt"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/fsm"
)

// With at most two leaves of a host at work, five VMs of one host go through
// two at a time and all finish; another host is not held back by the first.
func TestHostLimit(t *testing.T) {
	w := newWorld(t, time.Date(2024, 6, 3, 0, 0, 0, 0, time.UTC))
	w.addConfig(w.store.Tree.GlobalBackup(), nightly("0", "3", 3))
	for i := 1; i <= 5; i++ {
		w.addVM("h1", "p1", fmt.Sprintf("a%d", i), nil)
	}
	w.addVM("h2", "p1", "b1", nil)
	w.addVM("h2", "p1", "b2", nil)
	node := startFakeNode(t, w.slapd)
	w.start(func(o *Options) { o.MaxConcurrentPerHost = 2 })

	f := w.fireAt(w.at(2024, 6, 3, 3, 0))
	if len(f.Created) != 7 {
		t.Fatalf("fired %+v", f)
	}
	for _, dn := range f.Created {
		w.rec.waitWrite(t, dn, fsm.Finished)
	}
	if got := node.maxWorking("h1"); got != 2 {
		t.Fatalf("host h1 had up to %d leaves at work at once, want 2", got)
	}
	if got := node.maxWorking("h2"); got != 2 {
		t.Fatalf("host h2 had up to %d leaves at work at once, want 2", got)
	}
	for _, vm := range []string{"a1", "a2", "a3", "a4", "a5", "b1", "b2"} {
		if got := node.dirs("p1", vm); len(got) != 1 {
			t.Fatalf("%s: backup directories %v", vm, got)
		}
	}
}
