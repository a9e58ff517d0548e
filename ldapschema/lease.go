package ldapschema

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Leases and heartbeats live in the directory the daemons already share, under
// ou=conductor,ou=virtualization,ou=services,<base>, as applicationProcess
// entries (core schema) whose description says who holds them until when:
//
//	cn=controld,ou=conductor,...          the active controld
//	cn=<host>,ou=nodes,ou=conductor,...   the nodebackupd working for <host>; its heartbeat
//
// A lease is taken and renewed by compare-and-swap on that description, so of
// two contenders exactly one holds it; the other stands by until it expires.
// The description is multi-valued: the value "holder=... until=..." is the
// lease, and a holder may publish reports of its own next to it (Publish,
// e.g. a node's chunk store jobs), which renewals leave alone.

// Conductor is the container of leases.
func (t Tree) Conductor() string { return "ou=conductor," + t.Virtualization() }

// Nodes is the container of the node leases.
func (t Tree) Nodes() string { return "ou=nodes," + t.Conductor() }

// ControldLease is the DN of the active controld's lease.
func (t Tree) ControldLease() string { return "cn=controld," + t.Conductor() }

// NodeLease is the DN of a host's node lease (its heartbeat).
func (t Tree) NodeLease(host string) string { return "cn=" + ldap.EscapeDN(host) + "," + t.Nodes() }

// LeaseRecord is what a lease entry says.
type LeaseRecord struct {
	DN     string
	Holder string
	Until  time.Time
	// Reports are the other description values, by key (Publish).
	Reports map[string]string
}

// Expired says whether the holder's time is up at now, allowing for skew.
func (r LeaseRecord) Expired(now time.Time, skew time.Duration) bool {
	return r.Holder == "" || now.After(r.Until.Add(skew))
}

const leasePrefix = "holder="

func formatLease(holder string, until time.Time) string {
	return leasePrefix + holder + " until=" + until.UTC().Format(time.RFC3339Nano)
}

// leaseValue is the description value that is the lease ("" when none).
func leaseValue(e *ldap.Entry) string {
	for _, v := range e.GetAttributeValues(AttrDescription) {
		if strings.HasPrefix(v, leasePrefix) {
			return v
		}
	}
	return ""
}

// ChunkStoreReport starts the key of a node's report on the chunk store of
// a backup root: the key is this prefix and the root.
const ChunkStoreReport = "chunks "

// reportSep divides a report's key from its text in a description value.
const reportSep = ": "

// ParseLease reads a lease entry's description.
func ParseLease(e *ldap.Entry) (LeaseRecord, error) {
	r := LeaseRecord{DN: e.DN}
	for _, v := range e.GetAttributeValues(AttrDescription) {
		if k, text, ok := strings.Cut(v, reportSep); ok && !strings.HasPrefix(v, leasePrefix) {
			if r.Reports == nil {
				r.Reports = map[string]string{}
			}
			r.Reports[k] = text
		}
	}
	v := leaseValue(e)
	if v == "" {
		return r, nil
	}
	for _, f := range strings.Fields(v) {
		k, val, _ := strings.Cut(f, "=")
		switch k {
		case "holder":
			r.Holder = val
		case "until":
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return r, fmt.Errorf("%w: lease %s: %v", ErrMalformed, e.DN, err)
			}
			r.Until = t
		}
	}
	return r, nil
}

// Lease is one contender for a lease entry.
type Lease struct {
	Store  *Store
	DN     string
	Holder string        // unique per process
	TTL    time.Duration // how long a renewal holds
	Skew   time.Duration // clock difference tolerated between hosts

	held string // the description value we last wrote
}

// ensureContainers creates ou=conductor and ou=nodes when missing.
func (l *Lease) ensureContainers() error {
	t := l.Store.Tree
	for _, dn := range []string{t.Conductor(), t.Nodes()} {
		if _, err := l.Store.Get(dn, "1.1"); err == nil {
			continue
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		rdn := strings.TrimPrefix(strings.SplitN(dn, ",", 2)[0], "ou=")
		req := ldap.NewAddRequest(dn, nil)
		req.Attribute(AttrObjectClass, []string{ClassTop, ClassOrganizationalUnit})
		req.Attribute(AttrOU, []string{rdn})
		if err := l.Store.Add(req); err != nil && !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return nil
}

// Acquire takes or renews the lease at now. It reports whether this holder
// has it afterwards, and what the entry said before.
func (l *Lease) Acquire(now time.Time) (bool, LeaseRecord, error) {
	next := formatLease(l.Holder, now.Add(l.TTL))
	e, err := l.Store.Get(l.DN, AttrDescription)
	if errors.Is(err, ErrNotFound) {
		if err := l.ensureContainers(); err != nil {
			return false, LeaseRecord{}, err
		}
		cn := strings.TrimPrefix(strings.SplitN(l.DN, ",", 2)[0], "cn=")
		req := ldap.NewAddRequest(l.DN, nil)
		req.Attribute(AttrObjectClass, []string{ClassTop, "applicationProcess"})
		req.Attribute("cn", []string{unescapeRDN(cn)})
		req.Attribute(AttrDescription, []string{next})
		err := l.Store.Add(req)
		if errors.Is(err, ErrConflict) {
			return false, LeaseRecord{}, nil // someone else created it first
		}
		if err != nil {
			return false, LeaseRecord{}, err
		}
		l.held = next
		return true, LeaseRecord{DN: l.DN}, nil
	}
	if err != nil {
		return false, LeaseRecord{}, err
	}
	cur, err := ParseLease(e)
	if err != nil {
		return false, cur, err
	}
	if cur.Holder != l.Holder && !cur.Expired(now, l.Skew) {
		l.held = ""
		return false, cur, nil
	}
	err = l.swap(leaseValue(e), next)
	if errors.Is(err, ErrConflict) {
		l.held = ""
		return false, cur, nil
	}
	if err != nil {
		return false, cur, err
	}
	l.held = next
	return true, cur, nil
}

// Release gives the lease up at once (a clean shutdown), if still held.
func (l *Lease) Release() error {
	if l.held == "" {
		return nil
	}
	err := l.swap(l.held, "")
	l.held = ""
	if errors.Is(err, ErrConflict) {
		return nil
	}
	return err
}

// swap replaces the lease value old ("" none) by next ("" none) in one
// modify that fails with ErrConflict unless old is still the lease: a
// contender that wrote first wins. Other values stay as they are.
func (l *Lease) swap(old, next string) error {
	req := ldap.NewModifyRequest(l.DN, nil)
	assert := "(!(" + AttrDescription + "=" + leasePrefix + "*))"
	if old != "" {
		assert = equalityFilter(AttrDescription, old)
		req.Delete(AttrDescription, []string{old})
	}
	if next != "" {
		req.Add(AttrDescription, []string{next})
	}
	ctrl, err := assertion(assert)
	if err != nil {
		return err
	}
	req.Controls = append(req.Controls, ctrl)
	return l.Store.Modify(req)
}

// Publish sets the report under key in the lease entry ("" removes it), for
// whoever reads the leases (controld status). Only the holder publishes, so
// reports need no compare-and-swap.
func (l *Lease) Publish(key, text string) error {
	if strings.Contains(key, reportSep) || strings.HasPrefix(key, leasePrefix) {
		return fmt.Errorf("report key %q", key)
	}
	e, err := l.Store.Get(l.DN, AttrDescription)
	if err != nil {
		return err
	}
	req := ldap.NewModifyRequest(l.DN, nil)
	next := key + reportSep + text
	for _, v := range e.GetAttributeValues(AttrDescription) {
		if strings.HasPrefix(v, key+reportSep) && v != next {
			req.Delete(AttrDescription, []string{v})
		}
	}
	if text != "" && !slices.Contains(e.GetAttributeValues(AttrDescription), next) {
		req.Add(AttrDescription, []string{next})
	}
	if len(req.Changes) == 0 {
		return nil
	}
	return l.Store.Modify(req)
}

// ReadLeases returns every lease below dn (e.g. Tree.Nodes()).
func (s *Store) ReadLeases(dn string) ([]LeaseRecord, error) {
	es, err := s.Search(dn, ldap.ScopeSingleLevel, "(objectClass=applicationProcess)", []string{"cn", AttrDescription})
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []LeaseRecord
	for _, e := range es {
		r, err := ParseLease(e)
		if err != nil {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func unescapeRDN(v string) string {
	dn, err := ldap.ParseDN("cn=" + v)
	if err != nil || len(dn.RDNs) != 1 || len(dn.RDNs[0].Attributes) != 1 {
		return v
	}
	return dn.RDNs[0].Attributes[0].Value
}

// LeaseLog is told what a lease holder does (standing by, taken, lost).
type LeaseLog func(msg string, holder string, until time.Time, err error)

// Wait blocks until this holder has the lease, standing by while another
// holds it: one active daemon per role, the others ready to take over.
func (l *Lease) Wait(ctx context.Context, now func() time.Time, log LeaseLog) error {
	standby := false
	for {
		ok, cur, err := l.Acquire(now())
		switch {
		case err != nil:
			log("cannot read the lease yet", "", time.Time{}, err)
		case ok:
			log("lease taken", l.Holder, now().Add(l.TTL), nil)
			return nil
		case !standby:
			log("another instance holds the lease; standing by", cur.Holder, cur.Until, nil)
			standby = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(l.TTL / 4):
		}
	}
}

// Keep renews the lease until ctx ends. When another holder took it, Keep
// calls lost and returns: the caller must stop writing.
func (l *Lease) Keep(ctx context.Context, now func() time.Time, log LeaseLog, lost func()) {
	t := time.NewTicker(l.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, cur, err := l.Acquire(now())
		switch {
		case err != nil:
			log("cannot renew the lease; retrying", "", time.Time{}, err)
		case !ok:
			log("lease lost; stopping", cur.Holder, cur.Until, nil)
			lost()
			return
		}
	}
}
