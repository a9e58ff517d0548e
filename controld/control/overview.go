package control

import (
	"errors"
	"sort"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// OverdueGrace is how long after a planned run a VM may go without a good
// backup from that run before it counts as overdue: the time a night's
// batch may take.
const OverdueGrace = 6 * time.Hour

// VMOverview is one VM as the web UI's overview shows it.
type VMOverview struct {
	VM, Host, Pool string
	Plan           Plan
	// LastGood is the newest good backup (fsm.Leaf.GoodBackup), by its
	// planned time; zero LastGoodLeaf if none.
	LastGoodLeaf string
	LastGood     time.Time
	// Due is the latest planned run that ended OverdueGrace ago or more; a
	// VM whose last good backup is older than Due is Overdue.
	Due     time.Time
	Overdue bool
	Last    *LeafStatus  // the newest finished leaf, good or not
	Running []LeafStatus // leaves not finished
}

// Overview joins Status, ListSchedule and every VM's newest good backup.
// Only what store's bind may read appears.
func Overview(store *ldapschema.Store, loc *time.Location, now time.Time) ([]VMOverview, error) {
	st, err := Status(store)
	if err != nil {
		return nil, err
	}
	plans, err := ListSchedule(store, loc, now)
	if err != nil && !errors.Is(err, ldapschema.ErrNotFound) {
		return nil, err
	}
	es, err := store.Search(store.Tree.VirtualMachines(), ldap.ScopeWholeSubtree,
		"(objectClass="+ldapschema.ClassProvisioning+")", []string{"*"})
	if err != nil && !errors.Is(err, ldapschema.ErrNotFound) {
		return nil, err
	}
	good := map[string]string{}
	for _, e := range es {
		l, err := ldapschema.ParseLeaf(store.Tree, e)
		if err != nil || !l.FSM("").GoodBackup() {
			continue
		}
		if l.Name > good[l.VM] {
			good[l.VM] = l.Name
		}
	}
	by := map[string]*VMOverview{}
	get := func(vm string) *VMOverview {
		if by[vm] == nil {
			by[vm] = &VMOverview{VM: vm}
		}
		return by[vm]
	}
	for _, p := range plans {
		o := get(p.VM)
		o.Plan, o.Host, o.Pool = p, p.Host, p.Pool
	}
	for _, s := range st {
		o := get(s.VM)
		if o.Host == "" {
			o.Host = s.Node
		}
		o.Last, o.Running = s.Last, s.Running
	}
	out := make([]VMOverview, 0, len(by))
	for vm, o := range by {
		if name := good[vm]; name != "" {
			o.LastGoodLeaf = name
			o.LastGood, _ = fsm.ParseTime(name)
		}
		if o.Plan.Status == PlanScheduled && o.Plan.Schedule != nil {
			o.Due = lastPlanned(o.Plan.Schedule, now.Add(-OverdueGrace))
			o.Overdue = !o.Due.IsZero() && o.LastGood.Before(o.Due)
		}
		out = append(out, *o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out, nil
}

// lastPlanned is the schedule's latest run at or before t, looking back a
// day, a week, a month and a year in turn (Last walks every run between).
func lastPlanned(s *Schedule, t time.Time) time.Time {
	for _, span := range []time.Duration{24 * time.Hour, 8 * 24 * time.Hour, 32 * 24 * time.Hour, 367 * 24 * time.Hour} {
		if last, ok := s.Last(t.Add(-span), t); ok {
			return last
		}
	}
	return time.Time{}
}
