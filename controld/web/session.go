package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// sessionCookie carries the session's id; loginCookie the token of a login
// form before there is a session.
const (
	sessionCookie = "stoney_session"
	loginCookie   = "stoney_login"
)

// session is one logged-in person: their own directory connection, their
// CSRF token, and a message for the next page.
type session struct {
	id    string
	dn    string
	csrf  string
	store *ldapschema.Store // bound as dn; its options hold the password for redials

	mu       sync.Mutex
	lastSeen time.Time
	flash    []flash
	streams  int // open event streams
}

// flash is a one-time message, shown on the next page.
type flash struct {
	Error bool
	Text  string
}

func (s *session) addFlash(isErr bool, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flash = append(s.flash, flash{isErr, text})
}

func (s *session) takeFlash() []flash {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flash
	s.flash = nil
	return f
}

// sessions holds every live session in memory: a restart logs everybody out.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
	idle time.Duration
	now  func() time.Time
}

func newSessions(idle time.Duration, now func() time.Time) *sessions {
	return &sessions{byID: map[string]*session{}, idle: idle, now: now}
}

// randomToken is 32 bytes from the system's CSPRNG.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func (ss *sessions) create(dn string, store *ldapschema.Store) *session {
	s := &session{id: randomToken(), dn: dn, csrf: randomToken(), store: store, lastSeen: ss.now()}
	ss.mu.Lock()
	ss.byID[s.id] = s
	ss.mu.Unlock()
	return s
}

// get returns the live session of the request and marks it used; an idle
// one is ended.
func (ss *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	ss.mu.Lock()
	s := ss.byID[c.Value]
	ss.mu.Unlock()
	if s == nil {
		return nil
	}
	now := ss.now()
	s.mu.Lock()
	idle := now.Sub(s.lastSeen) > ss.idle
	if !idle {
		s.lastSeen = now
	}
	s.mu.Unlock()
	if idle {
		ss.end(s)
		return nil
	}
	return s
}

// end logs s out and closes its directory connection.
func (ss *sessions) end(s *session) {
	ss.mu.Lock()
	_, ok := ss.byID[s.id]
	delete(ss.byID, s.id)
	ss.mu.Unlock()
	if ok {
		s.store.Close()
	}
}

// sweep ends every idle session.
func (ss *sessions) sweep() {
	now := ss.now()
	ss.mu.Lock()
	var idle []*session
	for _, s := range ss.byID {
		s.mu.Lock()
		if now.Sub(s.lastSeen) > ss.idle {
			idle = append(idle, s)
		}
		s.mu.Unlock()
	}
	ss.mu.Unlock()
	for _, s := range idle {
		ss.end(s)
	}
}

func (ss *sessions) endAll() {
	ss.mu.Lock()
	all := make([]*session, 0, len(ss.byID))
	for _, s := range ss.byID {
		all = append(all, s)
	}
	ss.mu.Unlock()
	for _, s := range all {
		ss.end(s)
	}
}

// validCSRF compares the posted token with the session's in constant time.
func (s *session) validCSRF(r *http.Request) bool {
	t := r.PostFormValue("csrf")
	return t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(s.csrf)) == 1
}

// alive reports whether s is still logged in and not idle; an open event
// stream does not count as use.
func (ss *sessions) alive(s *session) bool {
	ss.mu.Lock()
	_, ok := ss.byID[s.id]
	ss.mu.Unlock()
	if !ok {
		return false
	}
	s.mu.Lock()
	idle := ss.now().Sub(s.lastSeen) > ss.idle
	s.mu.Unlock()
	if idle {
		ss.end(s)
	}
	return !idle
}
