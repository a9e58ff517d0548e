package web

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// A session ends after its idle time without a request; a request keeps it.
func TestSessionIdle(t *testing.T) {
	now := time.Unix(1e9, 0)
	ss := newSessions(10*time.Minute, func() time.Time { return now })
	s := ss.create("uid=a,o=x", &ldapschema.Store{})
	other := ss.create("uid=b,o=x", &ldapschema.Store{})
	if s.id == other.id || s.csrf == other.csrf || len(s.id) < 40 {
		t.Fatalf("ids and tokens must be random and distinct: %q %q", s.id, other.id)
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: s.id})
	now = now.Add(9 * time.Minute)
	if ss.get(req) != s {
		t.Fatal("session gone before its idle time")
	}
	now = now.Add(9 * time.Minute) // 9 minutes after the last request
	if !ss.alive(s) {
		t.Fatal("session ended 9 minutes after its last request")
	}
	now = now.Add(2 * time.Minute)
	if ss.alive(s) || ss.get(req) != nil {
		t.Fatal("session alive 11 minutes after its last request")
	}
	ss.sweep()
	if len(ss.byID) != 0 {
		t.Fatalf("sweep left %d idle sessions", len(ss.byID))
	}
}
