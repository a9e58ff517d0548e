package ldapschema_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// dial binds as the root DN through url (the server's, or a proxy's).
func dial(t *testing.T, s *testenv.Slapd, url string) *ldapschema.Store {
	t.Helper()
	o := s.AdminOptions()
	o.URL = url
	return testenv.DialStore(t, o)
}

func addLeaf(t *testing.T, st *ldapschema.Store, vm, leaf, mode string) string {
	t.Helper()
	tree := st.Tree
	if _, err := st.Get(tree.VM(vm)); errors.Is(err, ldapschema.ErrNotFound) {
		if err := st.Add(ldapschema.NewVMAddRequest(tree, ldapschema.VM{Name: vm, Node: "h1"})); err != nil {
			t.Fatal(err)
		}
		req := ldap.NewAddRequest(tree.VMBackup(vm), nil)
		req.Attribute("objectClass", []string{"top", "organizationalUnit"})
		req.Attribute("ou", []string{"backup"})
		if err := st.Add(req); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Add(ldapschema.NewLeafAddRequest(tree, vm, leaf, mode, "0")); err != nil {
		t.Fatal(err)
	}
	return tree.Leaf(vm, leaf)
}

// Of eight racing writers of the same compare-and-swap, exactly one wins, every
// round.
func TestChangeModeRace(t *testing.T) {
	_, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	for round := 0; round < 20; round++ {
		dn := addLeaf(t, st, "vm-race", fsm.FormatTime(time.Date(2024, 1, 1, 0, 0, round, 0, time.UTC)), "snapshot")
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, conflicts := 0, 0
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := st.ChangeMode(ldapschema.ModeChange{DN: dn, From: "snapshot", FromState: "0", To: "snapshotting"})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, ldapschema.ErrConflict):
					conflicts++
				default:
					t.Errorf("unexpected error: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || conflicts != 7 {
			t.Fatalf("round %d: %d winners, %d conflicts; want 1 and 7", round, wins, conflicts)
		}
	}
}

// ChangeMode writes mode, state, return value and execution times in one modify.
func TestChangeModeAtomic(t *testing.T) {
	_, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	dn := addLeaf(t, st, "vm-a", "20240101T000000Z", "snapshotting")
	rc := 5
	if err := st.ChangeMode(ldapschema.ModeChange{DN: dn, From: "snapshotting", To: "snapshotted", State: "20240101T000010Z",
		ReturnValue: &rc, ExecutionTime: []string{"snapshot: 1.800", "downtime: 2.900"}}); err != nil {
		t.Fatal(err)
	}
	l, err := st.GetLeaf(dn)
	if err != nil {
		t.Fatal(err)
	}
	if l.Mode != "snapshotted" || l.State != "20240101T000010Z" || l.ReturnValue != 5 || len(l.ExecutionTime) != 2 {
		t.Fatalf("leaf after one modify: %+v", l)
	}
	// From the wrong mode: refused, nothing changed.
	if err := st.ChangeMode(ldapschema.ModeChange{DN: dn, From: "snapshotting", To: "merged"}); !errors.Is(err, ldapschema.ErrConflict) {
		t.Fatalf("stale compare-and-swap: %v, want ErrConflict", err)
	}
	if err := st.ChangeMode(ldapschema.ModeChange{DN: dn + "x", From: "a", To: "b"}); err == nil {
		t.Fatal("modify of a missing entry succeeded")
	}
}

// proxy forwards TCP to slapd and can cut every connection, so a test can break
// a watch without restarting the server.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) url() string { return "ldap://" + p.ln.Addr().String() }

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) resume() { p.mu.Lock(); p.down = false; p.mu.Unlock() }

// events collects a watch's events for a test.
type events struct {
	mu sync.Mutex
	ch chan struct{}
	ev []ldapschema.Event
}

func (e *events) add(ev ldapschema.Event) {
	e.mu.Lock()
	e.ev = append(e.ev, ev)
	e.mu.Unlock()
	select {
	case e.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until some event satisfies f.
func (e *events) waitFor(t *testing.T, what string, f func(ldapschema.Event) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		e.mu.Lock()
		for _, ev := range e.ev {
			if f(ev) {
				e.mu.Unlock()
				return
			}
		}
		e.mu.Unlock()
		select {
		case <-e.ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no event: %s", what)
		}
	}
}

func (e *events) reset() { e.mu.Lock(); e.ev = nil; e.mu.Unlock() }

func putWithMode(dn, mode string) func(ldapschema.Event) bool {
	return func(ev ldapschema.Event) bool {
		return ev.Kind == ldapschema.EventPut && ldapschema.NormalizeDN(ev.DN) == ldapschema.NormalizeDN(dn) &&
			ev.Entry.GetAttributeValue(ldapschema.AttrMode) == mode
	}
}

func deleted(dn string) func(ldapschema.Event) bool {
	return func(ev ldapschema.Event) bool {
		return ev.Kind == ldapschema.EventDelete && ldapschema.NormalizeDN(ev.DN) == ldapschema.NormalizeDN(dn)
	}
}

// The watch reports adds, modifies and deletes; when its connection breaks it
// resumes from its cookie and reports what happened meanwhile, deletions included.
func TestWatchResumes(t *testing.T) {
	s, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	p := newProxy(t, s.URL[len("ldap://"):])
	watched := dial(t, s, p.url())
	a := addLeaf(t, st, "vm-w", "20240101T000000Z", "initialize")
	b := addLeaf(t, st, "vm-w", "20240101T000001Z", "initialize")

	var ev events
	ev.ch = make(chan struct{}, 1)
	cache := ldapschema.NewCache()
	cache.OnEvent(ev.add)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	broken := make(chan error, 10)
	go watched.Watch(ctx, ldapschema.WatchOptions{
		Base: st.Tree.VirtualMachines(), Filter: "(objectClass=sstProvisioning)", Attrs: []string{"*"},
		MinBackoff: 20 * time.Millisecond,
		OnError:    func(err error) { broken <- err },
	}, cache.Apply)
	if err := cache.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if cache.Len() != 2 {
		t.Fatalf("initial refresh: %d entries, want 2", cache.Len())
	}
	if err := st.Update(a, "", map[string][]string{ldapschema.AttrMode: {"initialized"}}); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "modify of a", putWithMode(a, "initialized"))

	// Break the watch; meanwhile delete b, change a, add c.
	p.cut()
	select {
	case <-broken:
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not notice its connection broke")
	}
	ev.reset()
	if err := st.Delete(b); err != nil {
		t.Fatal(err)
	}
	if err := st.Update(a, "", map[string][]string{ldapschema.AttrMode: {"snapshot"}}); err != nil {
		t.Fatal(err)
	}
	c := addLeaf(t, st, "vm-w", "20240101T000002Z", "initialize")
	p.resume()
	ev.waitFor(t, "delete of b while disconnected", deleted(b))
	ev.waitFor(t, "modify of a while disconnected", putWithMode(a, "snapshot"))
	ev.waitFor(t, "add of c while disconnected", putWithMode(c, "initialize"))
	if _, ok := cache.Get(b); ok {
		t.Fatal("cache still holds the deleted leaf")
	}
	if cache.Len() != 2 {
		t.Fatalf("cache holds %d entries after resuming, want 2", cache.Len())
	}
}

// After slapd itself restarts the watch comes back and sees new changes.
func TestWatchSurvivesServerRestart(t *testing.T) {
	s, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	a := addLeaf(t, st, "vm-r", "20240101T000000Z", "initialize")
	var ev events
	ev.ch = make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watched := s.AdminStore(t)
	go watched.Watch(ctx, ldapschema.WatchOptions{
		Base: st.Tree.VirtualMachines(), Filter: "(objectClass=sstProvisioning)", Attrs: []string{"*"},
		MinBackoff: 20 * time.Millisecond,
	}, ev.add)
	ev.waitFor(t, "initial refresh", func(e ldapschema.Event) bool { return e.Kind == ldapschema.EventSynced })
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	ev.reset()
	// The store redials on its own.
	if err := st.Update(a, "", map[string][]string{ldapschema.AttrMode: {"initialized"}}); err != nil {
		if err := st.Update(a, "", map[string][]string{ldapschema.AttrMode: {"initialized"}}); err != nil {
			t.Fatal(err)
		}
	}
	ev.waitFor(t, "modify after restart", putWithMode(a, "initialized"))
}

// A connection the server drops is reported as ErrUnavailable (transient), so
// callers retry instead of failing the step, and the store redials afterwards.
func TestStoreConnectionReset(t *testing.T) {
	s, direct := testenv.SlapdStore(t, testenv.SlapdOptions{})
	dn := addLeaf(t, direct, "vm-reset", "20240101T000000Z", "snapshot")
	p := newProxy(t, s.URL[len("ldap://"):])
	st := dial(t, s, p.url())
	if _, err := st.Get(dn); err != nil {
		t.Fatal(err)
	}
	p.cut()
	time.Sleep(50 * time.Millisecond)
	err := st.Update(dn, "", map[string][]string{ldapschema.AttrState: {"0"}})
	if !errors.Is(err, ldapschema.ErrUnavailable) || !ldapschema.IsTransient(err) {
		t.Fatalf("write on a reset connection: %v, want ErrUnavailable", err)
	}
	p.resume()
	if err := st.Update(dn, "", map[string][]string{ldapschema.AttrState: {"0"}}); err != nil {
		t.Fatalf("after the server is back: %v", err)
	}
}
