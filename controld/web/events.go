package web

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Event streams: each open page holds one server-sent event stream. Its
// directory watch is bound as the person (the session's store), so it sees
// what they may read, no more. Every change re-renders the page's live part
// on the server and sends it whole: the browser only swaps it in.

const (
	maxStreams = 8                      // per session
	settle     = 150 * time.Millisecond // changes this close together render once
	refresh    = time.Minute            // ages and next runs move without changes
	heartbeat  = 25 * time.Second
)

func (s *Server) events(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	var base, tmpl, page string
	var render func() (any, error)
	tree := sess.store.Tree
	switch q.Get("view") {
	case "overview":
		base, page, tmpl = tree.VirtualMachines(), "overview", "overview-live"
		render = func() (any, error) { return s.overview(sess, q.Get("q"), q.Get("sort"), q.Get("dir")) }
	case "vm":
		vm := q.Get("vm")
		if err := ldapschema.SafeName(vm); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		base, page, tmpl = tree.VM(vm), "vm", "vm-live"
		render = func() (any, error) { return s.vmView(sess, vm) }
	default:
		http.Error(w, "unknown view", http.StatusBadRequest)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	sess.mu.Lock()
	if sess.streams >= maxStreams {
		sess.mu.Unlock()
		http.Error(w, "too many open pages in this session", http.StatusTooManyRequests)
		return
	}
	sess.streams++
	sess.mu.Unlock()
	defer func() { sess.mu.Lock(); sess.streams--; sess.mu.Unlock() }()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	changed := make(chan struct{}, 1)
	go sess.store.Watch(ctx, ldapschema.WatchOptions{
		Base:   base,
		Filter: "(|(objectClass=" + ldapschema.ClassProvisioning + ")(objectClass=" + ldapschema.ClassVirtualMachine + "))",
		Attrs:  []string{ldapschema.AttrObjectClass},
	}, func(ldapschema.Event) {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	send := func() bool {
		if !s.sessions.alive(sess) {
			fmt.Fprint(w, "event: ended\ndata: the session ended\n\n")
			fl.Flush()
			return false
		}
		data, err := render()
		var html string
		if err == nil {
			html, err = s.fragment(page, tmpl, data)
		}
		if err != nil {
			html = `<p class="error" role="alert">` + templateEscape(describe(err)) + `</p>`
		}
		var b strings.Builder
		b.WriteString("event: update\n")
		for _, line := range strings.Split(html, "\n") {
			b.WriteString("data: " + line + "\n")
		}
		b.WriteString("\n")
		if _, err := fmt.Fprint(w, b.String()); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	if !send() {
		return
	}
	tick, beat := time.NewTicker(refresh), time.NewTicker(heartbeat)
	defer tick.Stop()
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			select { // let a burst of changes settle
			case <-time.After(settle):
			case <-ctx.Done():
				return
			}
			select {
			case <-changed:
			default:
			}
			if !send() {
				return
			}
		case <-tick.C:
			if !send() {
				return
			}
		case <-beat.C:
			if !s.sessions.alive(sess) {
				send()
				return
			}
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
