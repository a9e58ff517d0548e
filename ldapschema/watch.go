package ldapschema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// EventKind says what happened to an entry.
type EventKind int

const (
	// EventPut: the entry was added or changed (Entry holds it whole).
	EventPut EventKind = iota
	// EventDelete: the entry was removed or left the filter.
	EventDelete
	// EventSynced: a refresh finished; the watcher's view is complete again.
	// Consumers use it to re-check everything (a missed event is harmless).
	EventSynced
)

func (k EventKind) String() string {
	switch k {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	case EventSynced:
		return "synced"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one change seen by a Watch.
type Event struct {
	Kind  EventKind
	DN    string
	Entry *ldap.Entry
}

// WatchOptions says what to follow.
type WatchOptions struct {
	Base       string
	Filter     string
	Attrs      []string
	MinBackoff time.Duration // first wait before redialling (default 100ms)
	MaxBackoff time.Duration // longest wait (default 10s)
	// OnError is told about each broken session before the watch redials.
	OnError func(err error)
}

// syncRefreshRequired: the server cannot resume from our cookie (RFC 4533 e-syncRefreshRequired).
const syncRefreshRequired = 4096

// Watch follows the entries below o.Base that match o.Filter with an LDAP content
// synchronisation (syncrepl refreshAndPersist) search on a connection of its own,
// and calls fn for every change, in order, from this goroutine. When the connection
// breaks it redials with backoff and resumes from the last cookie; entries deleted
// meanwhile are reported as deletes. It returns when ctx is done.
func (s *Store) Watch(ctx context.Context, o WatchOptions, fn func(Event)) error {
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	w := &watcher{store: s, opts: o, fn: fn, dns: map[string]string{}}
	backoff := o.MinBackoff
	for {
		synced, err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("watch search ended")
		}
		if o.OnError != nil {
			o.OnError(err)
		}
		if synced {
			backoff = o.MinBackoff
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff *= 2
		if backoff > o.MaxBackoff {
			backoff = o.MaxBackoff
		}
	}
}

type watcher struct {
	store  *Store
	opts   WatchOptions
	fn     func(Event)
	cookie []byte
	dns    map[string]string // entryUUID → DN: deletes on resume name only the UUID
}

// session runs one syncrepl search until it breaks; synced reports whether its
// refresh phase completed (the backoff is reset then).
func (w *watcher) session(ctx context.Context) (synced bool, err error) {
	conn, err := w.store.opts.dial()
	if err != nil {
		return false, err
	}
	defer conn.Close()

	// Syncrepl appends its control to the request: build a fresh one per session.
	req := ldap.NewSearchRequest(w.opts.Base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, w.opts.Filter, w.opts.Attrs, nil)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp := conn.Syncrepl(sctx, req, 256, ldap.SyncRequestModeRefreshAndPersist, w.cookie, false)

	// During the refresh, remember every UUID the server vouches for: if it ends
	// with a present phase (or we started without a cookie), the others are gone.
	fullReload := w.cookie == nil
	presentPhase := false
	refreshing := true
	seen := map[string]bool{}

	endRefresh := func() {
		if !refreshing {
			return
		}
		refreshing = false
		if fullReload || presentPhase {
			for uuid, dn := range w.dns {
				if !seen[uuid] {
					delete(w.dns, uuid)
					w.fn(Event{Kind: EventDelete, DN: dn})
				}
			}
		}
		synced = true
		w.fn(Event{Kind: EventSynced})
	}

	for resp.Next() {
		ctrls := resp.Controls()
		if e := resp.Entry(); e != nil {
			st, _ := ldap.FindControl(ctrls, ldap.ControlTypeSyncState).(*ldap.ControlSyncState)
			if st == nil {
				continue
			}
			if len(st.Cookie) > 0 {
				w.cookie = st.Cookie
			}
			uuid := st.EntryUUID.String()
			switch st.State {
			case ldap.SyncStateDelete:
				w.remove(uuid, e.DN)
			case ldap.SyncStatePresent:
				seen[uuid] = true
				presentPhase = true
				if len(e.Attributes) > 0 {
					w.put(uuid, e)
				} else if old, ok := w.dns[uuid]; !ok || !sameDN(old, e.DN) {
					// Present without attributes, for an entry we don't hold as named: fetch it.
					full, err := w.store.Get(e.DN, w.opts.Attrs...)
					if err != nil {
						return synced, err
					}
					w.put(uuid, full)
				}
			default: // add, modify
				seen[uuid] = true
				w.put(uuid, e)
			}
			continue
		}
		for _, c := range ctrls {
			info, ok := c.(*ldap.ControlSyncInfo)
			if !ok {
				continue
			}
			switch info.Value {
			case ldap.SyncInfoNewcookie:
				w.cookie = info.NewCookie.Cookie
			case ldap.SyncInfoRefreshDelete:
				w.setCookie(info.RefreshDelete.Cookie)
				if info.RefreshDelete.RefreshDone {
					endRefresh()
				}
			case ldap.SyncInfoRefreshPresent:
				w.setCookie(info.RefreshPresent.Cookie)
				presentPhase = true
				if info.RefreshPresent.RefreshDone {
					endRefresh()
				}
			case ldap.SyncInfoSyncIdSet:
				w.setCookie(info.SyncIdSet.Cookie)
				for _, u := range info.SyncIdSet.SyncUUIDs {
					uuid := u.String()
					if info.SyncIdSet.RefreshDeletes {
						w.remove(uuid, "")
					} else {
						seen[uuid] = true
						presentPhase = true
					}
				}
			}
		}
	}
	err = resp.Err()
	if ldap.IsErrorWithCode(err, syncRefreshRequired) {
		w.cookie = nil // start over; the next session's full reload drops what is gone
	}
	return synced, err
}

func (w *watcher) setCookie(c []byte) {
	if len(c) > 0 {
		w.cookie = c
	}
}

func (w *watcher) put(uuid string, e *ldap.Entry) {
	if old, ok := w.dns[uuid]; ok && !sameDN(old, e.DN) {
		w.fn(Event{Kind: EventDelete, DN: old}) // renamed
	}
	w.dns[uuid] = e.DN
	w.fn(Event{Kind: EventPut, DN: e.DN, Entry: e})
}

func (w *watcher) remove(uuid, dn string) {
	if old, ok := w.dns[uuid]; ok {
		dn = old
		delete(w.dns, uuid)
	}
	if dn != "" {
		w.fn(Event{Kind: EventDelete, DN: dn})
	}
}

func sameDN(a, b string) bool { return NormalizeDN(a) == NormalizeDN(b) }

// NormalizeDN gives the form used as a map key: lower case, no blanks around
// separators. Good enough for the DNs this project writes and reads back.
func NormalizeDN(dn string) string {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(dn))
	}
	var b strings.Builder
	for i, rdn := range parsed.RDNs {
		if i > 0 {
			b.WriteByte(',')
		}
		for j, a := range rdn.Attributes {
			if j > 0 {
				b.WriteByte('+')
			}
			b.WriteString(strings.ToLower(a.Type))
			b.WriteByte('=')
			b.WriteString(strings.ToLower(ldap.EscapeDN(a.Value)))
		}
	}
	return b.String()
}
