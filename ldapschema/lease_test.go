package ldapschema_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Of contenders for one lease exactly one holds it; the others take over only
// after it expired, and a released lease is free at once.
func TestLease(t *testing.T) {
	_, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	dn := st.Tree.NodeLease("kvm-01")
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(h string) *ldapschema.Lease {
		return &ldapschema.Lease{Store: st, DN: dn, Holder: h, TTL: 30 * time.Second, Skew: 2 * time.Second}
	}
	// Eight racing for a fresh lease: one winner.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var winners []string
	for i := 0; i < 8; i++ {
		l := mk(string(rune('a' + i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, _, err := l.Acquire(now)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				winners = append(winners, l.Holder)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d holders of one lease: %v", len(winners), winners)
	}
	holder, other := mk(winners[0]), mk("z")
	if ok, _, err := holder.Acquire(now.Add(10 * time.Second)); err != nil || !ok {
		t.Fatalf("holder cannot renew: %v %v", ok, err)
	}
	if ok, cur, _ := other.Acquire(now.Add(39 * time.Second)); ok || cur.Holder != holder.Holder {
		t.Fatalf("taken before it expired (+skew): %v %+v", ok, cur)
	}
	if ok, _, _ := other.Acquire(now.Add(43 * time.Second)); !ok {
		t.Fatal("expired lease not taken over")
	}
	if ok, _, _ := holder.Acquire(now.Add(44 * time.Second)); ok {
		t.Fatal("the old holder still renews after a takeover")
	}
	if err := other.Release(); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := holder.Acquire(now.Add(45 * time.Second)); !ok {
		t.Fatal("released lease not free")
	}
	leases, err := st.ReadLeases(st.Tree.Nodes())
	if err != nil || len(leases) != 1 || leases[0].Holder != holder.Holder {
		t.Fatalf("ReadLeases: %+v %v", leases, err)
	}
}
