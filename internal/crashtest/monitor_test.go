package crashtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// monitor follows one leaf through a watch on its VM's ou=backup (the leaf
// may not exist yet), keeps the modes it went through and fires triggers
// from the watch goroutine the moment the leaf enters a mode: a kill must
// land while the step runs, and polling would lose short modes.
type monitor struct {
	store *ldapschema.Store
	dn    string
	norm  string
	start time.Time

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	cur      ldapschema.Leaf
	csn      string // entryCSN of cur: a late poll must not undo a newer event
	exists   bool
	gone     bool // deleted after it existed
	hist     []seenMode
	triggers []*trigger

	synced chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

type seenMode struct {
	at   time.Time
	mode string
	rv   int
}

type trigger struct {
	mode  string
	fn    func(ldapschema.Leaf)
	fired bool
}

var watchAttrs = []string{"*", "entryCSN"}

// watchLeaf starts following dn, a leaf of vm, and returns once the watch
// has finished its first refresh.
func watchLeaf(store *ldapschema.Store, vm, dn string) (*monitor, error) {
	ctx, cancel := context.WithCancel(context.Background())
	m := &monitor{
		store: store, dn: dn, norm: ldapschema.NormalizeDN(dn), start: time.Now(),
		changed: make(chan struct{}), synced: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
	}
	var once sync.Once
	go func() {
		defer close(m.done)
		_ = store.Watch(ctx, ldapschema.WatchOptions{
			Base: store.Tree.VMBackup(vm), Filter: "(objectClass=" + ldapschema.ClassProvisioning + ")",
			Attrs: watchAttrs, MaxBackoff: time.Second,
		}, func(ev ldapschema.Event) {
			switch ev.Kind {
			case ldapschema.EventSynced:
				once.Do(func() { close(m.synced) })
			case ldapschema.EventPut:
				if ldapschema.NormalizeDN(ev.DN) == m.norm {
					m.put(ev.Entry.GetAttributeValue("entryCSN"), ev.Entry)
				}
			case ldapschema.EventDelete:
				if ldapschema.NormalizeDN(ev.DN) == m.norm {
					m.markGone()
				}
			}
		})
	}()
	select {
	case <-m.synced:
		return m, nil
	case <-time.After(20 * time.Second):
		m.stop()
		return nil, fmt.Errorf("watch on %s did not sync within 20s", store.Tree.VMBackup(vm))
	}
}

func (m *monitor) stop() {
	m.cancel()
	<-m.done
}

// onMode runs fn (once) when the leaf enters mode; fn must not block.
func (m *monitor) onMode(mode string, fn func(ldapschema.Leaf)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.triggers = append(m.triggers, &trigger{mode: mode, fn: fn})
}

func (m *monitor) put(csn string, e *ldap.Entry) {
	l, err := ldapschema.ParseLeaf(m.store.Tree, e)
	if err != nil {
		return
	}
	var fire []*trigger
	m.mu.Lock()
	if csn != "" && m.csn != "" && csn < m.csn {
		m.mu.Unlock()
		return
	}
	if csn != "" {
		m.csn = csn
	}
	if !m.exists || l.Mode != m.cur.Mode || l.ReturnValue != m.cur.ReturnValue {
		m.hist = append(m.hist, seenMode{at: time.Now(), mode: l.Mode, rv: l.ReturnValue})
	}
	m.cur, m.exists, m.gone = l, true, false
	for _, t := range m.triggers {
		if !t.fired && t.mode == l.Mode {
			t.fired = true
			fire = append(fire, t)
		}
	}
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	for _, t := range fire {
		t.fn(l)
	}
}

func (m *monitor) markGone() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.exists || m.gone {
		return
	}
	m.gone = true
	m.hist = append(m.hist, seenMode{at: time.Now(), mode: "(removed)"})
	close(m.changed)
	m.changed = make(chan struct{})
}

// state is what the monitor knows of the leaf now.
type state struct {
	leaf   ldapschema.Leaf
	exists bool
	gone   bool
}

func (s state) mode() string {
	switch {
	case s.gone:
		return "(removed)"
	case !s.exists:
		return "(absent)"
	}
	return s.leaf.Mode
}

func (m *monitor) state() state {
	m.mu.Lock()
	defer m.mu.Unlock()
	return state{leaf: m.cur, exists: m.exists && !m.gone, gone: m.gone}
}

// poll reads the leaf directly, for when the watch is between sessions.
func (m *monitor) poll() {
	e, err := m.store.Get(m.dn, watchAttrs...)
	if errors.Is(err, ldapschema.ErrNotFound) {
		m.markGone()
		return
	}
	if err == nil {
		m.put(e.GetAttributeValue("entryCSN"), e)
	}
}

// waitFor waits until cond holds on the leaf, at most limit.
func (m *monitor) waitFor(limit time.Duration, cond func(state) bool) (state, bool) {
	deadline := time.Now().Add(limit)
	for {
		m.mu.Lock()
		st := state{leaf: m.cur, exists: m.exists && !m.gone, gone: m.gone}
		ch := m.changed
		m.mu.Unlock()
		if cond(st) {
			return st, true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return st, false
		}
		select {
		case <-ch:
		case <-time.After(min(left, 2*time.Second)):
			m.poll()
		}
	}
}

func finishedOrGone(s state) bool { return s.gone || (s.exists && s.leaf.Mode == "finished") }

// firstAt is when the leaf first entered mode.
func (m *monitor) firstAt(mode string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.hist {
		if h.mode == mode {
			return h.at, true
		}
	}
	return time.Time{}, false
}

// history lists the modes the leaf went through, with seconds since the
// monitor started and return values other than 0.
func (m *monitor) history() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var parts []string
	for _, h := range m.hist {
		s := fmt.Sprintf("%s@%.1fs", h.mode, h.at.Sub(m.start).Seconds())
		if h.rv != 0 {
			s += fmt.Sprintf("(rv=%d)", h.rv)
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "(no mode seen)"
	}
	return strings.Join(parts, " → ")
}
