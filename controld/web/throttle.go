package web

import (
	"sync"
	"time"
)

// throttle slows down repeated failed logins, per login name and per client
// address: after the first failure each further one doubles the wait before
// the next attempt is tried, up to maxDelay. A success clears the name's
// count; the address's count fades with forget.
type throttle struct {
	mu     sync.Mutex
	now    func() time.Time
	byKey  map[string]*failures
	base   time.Duration
	max    time.Duration
	forget time.Duration
}

type failures struct {
	n    int
	next time.Time // no attempt before this
	last time.Time
}

func newThrottle(now func() time.Time) *throttle {
	return &throttle{now: now, byKey: map[string]*failures{}, base: 500 * time.Millisecond, max: 30 * time.Second, forget: 15 * time.Minute}
}

// wait returns how long an attempt for these keys must wait.
func (t *throttle) wait(keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var w time.Duration
	for _, k := range keys {
		if f := t.byKey[k]; f != nil {
			if now.Sub(f.last) > t.forget {
				delete(t.byKey, k)
				continue
			}
			w = max(w, f.next.Sub(now))
		}
	}
	return w
}

// failed counts a failed attempt for every key.
func (t *throttle) failed(keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for _, k := range keys {
		f := t.byKey[k]
		if f == nil || now.Sub(f.last) > t.forget {
			f = &failures{}
			t.byKey[k] = f
		}
		f.n++
		f.last = now
		d := time.Duration(0)
		if f.n > 1 {
			d = t.base << min(f.n-2, 10)
		}
		f.next = now.Add(min(d, t.max))
	}
}

// succeeded clears a key (the login name: the person knows the password).
func (t *throttle) succeeded(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byKey, key)
}
