package libvirt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	lv "libvirt.org/go/libvirt"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// Disk is a file-backed device='disk' of a domain.
type Disk = format.Disk

// DomainInfo describes a domain as libvirt sees it now.
type DomainInfo struct {
	Name      string
	Running   bool   // active: running or paused
	State     string // running, paused, shut off...
	MemoryKiB uint64
	Disks     []Disk
	XML       string // live XML when active, else the persistent definition
}

// Hypervisor is one libvirt connection, safe for concurrent use. Operations
// on one domain are serialized; different domains proceed in parallel. A
// lost connection is re-opened on the next call.
type Hypervisor struct {
	uri string

	mu   sync.Mutex
	conn *connRef // nil until connected, and after a loss

	locksMu sync.Mutex
	locks   map[string]*sync.Mutex

	// seam is what every operation that changes a domain or a file passes
	// (SetSeam); nil runs them unchanged.
	seam *hostio.Seam

	// Test seams, nil in production.
	failAt    func(step string) error      // injects a failure at a named step
	stateSize func(d format.Domain) uint64 // overrides the state file estimate
}

// connRef counts the calls using a connection, so that one found broken
// is closed only when no other goroutine still uses it.
type connRef struct {
	c     *lv.Connect
	users int
	dead  bool
}

// Open connects to the hypervisor at uri (e.g. qemu:///system).
func Open(uri string) (*Hypervisor, error) {
	startEventLoop() // before the first connection: downtimes come from its events
	h := &Hypervisor{uri: uri, locks: map[string]*sync.Mutex{}}
	r, err := h.acquire()
	if err != nil {
		return nil, err
	}
	h.release(r, false)
	return h, nil
}

// SetSeam makes every operation that changes a domain or a file pass s,
// where a test can end the process or fail the operation. Call before use.
func (h *Hypervisor) SetSeam(s *hostio.Seam) { h.seam = s }

// op runs one operation that changes a domain or a file through the seam:
// every such operation of a step is one point where a test may crash or fail.
func (h *Hypervisor) op(name string, f func() error) error { return h.seam.Do(name, f) }

// Close closes the connection once the calls using it have returned.
func (h *Hypervisor) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.conn
	h.conn = nil
	if r == nil {
		return nil
	}
	r.dead = true
	if r.users == 0 {
		_, err := r.c.Close()
		return err
	}
	return nil
}

func (h *Hypervisor) acquire() (*connRef, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		c, err := lv.NewConnect(h.uri)
		if err != nil {
			return nil, wrap(ErrConnection, err, "%s", h.uri)
		}
		h.conn = &connRef{c: c}
	}
	h.conn.users++
	return h.conn, nil
}

// release ends a call; a lost connection is forgotten, so that the next
// call reconnects, and closed when its last user is done.
func (h *Hypervisor) release(r *connRef, lost bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.users--
	if lost && h.conn == r {
		h.conn = nil
		r.dead = true
	}
	if r.dead && r.users == 0 {
		_, _ = r.c.Close()
	}
}

// do runs f on the connection.
func (h *Hypervisor) do(f func(c *lv.Connect) error) error {
	r, err := h.acquire()
	if err != nil {
		return err
	}
	err = f(r.c)
	h.release(r, isConnLost(err))
	return err
}

// doRetry is do for steps that must not give up at the first lost
// connection (bringing a VM back): it retries while libvirtd restarts.
func (h *Hypervisor) doRetry(ctx context.Context, f func(c *lv.Connect) error) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := h.do(f)
		if err == nil || !IsTransient(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// withDomain looks the domain up and runs f on it.
func (h *Hypervisor) withDomain(name string, f func(c *lv.Connect, d *lv.Domain) error) error {
	return h.do(func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(name)
		if err != nil {
			if errors.Is(err, lv.ERR_NO_DOMAIN) {
				return wrap(ErrDomainNotFound, err, "%s", name)
			}
			return err
		}
		defer d.Free()
		return f(c, d)
	})
}

// lockDomain serializes operations on one domain.
func (h *Hypervisor) lockDomain(name string) func() {
	h.locksMu.Lock()
	m, ok := h.locks[name]
	if !ok {
		m = &sync.Mutex{}
		h.locks[name] = m
	}
	h.locksMu.Unlock()
	m.Lock()
	return m.Unlock
}

// timedOnDomain runs op with the domain locked and returns how long it
// took, the wait for the lock included: what the caller of a step waited.
func (h *Hypervisor) timedOnDomain(name string, op func()) time.Duration {
	start := time.Now()
	unlock := h.lockDomain(name)
	defer unlock()
	op()
	return time.Since(start)
}

func (h *Hypervisor) fail(step string) error {
	if h.failAt == nil {
		return nil
	}
	return h.failAt(step)
}

var stateNames = map[lv.DomainState]string{
	lv.DOMAIN_NOSTATE:     "no state",
	lv.DOMAIN_RUNNING:     "running",
	lv.DOMAIN_BLOCKED:     "blocked",
	lv.DOMAIN_PAUSED:      "paused",
	lv.DOMAIN_SHUTDOWN:    "shutting down",
	lv.DOMAIN_SHUTOFF:     "shut off",
	lv.DOMAIN_CRASHED:     "crashed",
	lv.DOMAIN_PMSUSPENDED: "suspended",
}

// Domain describes the named domain; ErrDomainNotFound when it is absent.
func (h *Hypervisor) Domain(name string) (DomainInfo, error) {
	info, _, err := h.describe(name, 0)
	return info, err
}

// describe returns the domain's info and parsed XML (xmlFlags for the XML).
func (h *Hypervisor) describe(name string, xmlFlags lv.DomainXMLFlags) (DomainInfo, format.Domain, error) {
	var info DomainInfo
	var desc format.Domain
	err := h.withDomain(name, func(_ *lv.Connect, d *lv.Domain) error {
		st, _, err := d.GetState()
		if err != nil {
			return err
		}
		active, err := d.IsActive()
		if err != nil {
			return err
		}
		x, err := d.GetXMLDesc(xmlFlags)
		if err != nil {
			return err
		}
		desc, err = format.ParseDomainXML(x)
		if err != nil {
			return err
		}
		info = DomainInfo{Name: name, Running: active, State: stateNames[st],
			MemoryKiB: desc.MemoryKiB, Disks: desc.Disks, XML: x}
		if info.State == "" {
			info.State = fmt.Sprintf("state %d", st)
		}
		return nil
	})
	return info, desc, err
}
