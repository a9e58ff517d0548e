package web

import (
	"errors"
	"testing"
	"time"
)

func TestConfigCheck(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want error // nil: accepted; errAny: some error
	}{
		{Config{}, nil},
		{Config{Listen: "127.0.0.1:8430"}, nil},
		{Config{Listen: "[::1]:8430"}, nil},
		{Config{Listen: "localhost:8430"}, nil},
		{Config{Listen: ":8430"}, ErrPlainHTTP},
		{Config{Listen: "192.0.2.1:8430"}, ErrPlainHTTP},
		{Config{Listen: "192.0.2.1:8430", AllowPlainHTTP: true}, nil},
		{Config{Listen: "192.0.2.1:8430", CertFile: "c.pem", KeyFile: "k.pem"}, nil},
		{Config{Listen: "192.0.2.1:8430", CertFile: "c.pem"}, errAny},
		{Config{Listen: "127.0.0.1:8430", UserDN: "uid=x,ou=people"}, errAny},
		{Config{Listen: "127.0.0.1"}, errAny},
	} {
		err := c.cfg.Check()
		switch {
		case c.want == nil && err != nil, c.want != nil && err == nil,
			c.want != nil && c.want != errAny && !errors.Is(err, c.want):
			t.Errorf("%+v: Check() = %v, want %v", c.cfg, err, c.want)
		}
	}
}

var errAny = errors.New("any error")

func TestBindDN(t *testing.T) {
	c := Config{UserDN: "uid=%s,ou=people,o=x"}
	for in, want := range map[string]string{
		"alice":                   "uid=alice,ou=people,o=x",
		" bob ":                   "uid=bob,ou=people,o=x",
		"a,b":                     `uid=a\,b,ou=people,o=x`,
		"cn=admin,o=x":            "cn=admin,o=x",
		"uid=carol,ou=others,o=x": "uid=carol,ou=others,o=x",
	} {
		if got, err := c.bindDN(in); err != nil || got != want {
			t.Errorf("bindDN(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := c.bindDN(""); err == nil {
		t.Error("empty name accepted")
	}
	if _, err := (Config{}).bindDN("alice"); !errors.Is(err, ErrNoDN) {
		t.Errorf("a name without userDN: %v", err)
	}
}

func TestThrottle(t *testing.T) {
	now := time.Unix(1e9, 0)
	th := newThrottle(func() time.Time { return now })
	if w := th.wait("ip:a", "name:x"); w != 0 {
		t.Fatalf("fresh: wait %v", w)
	}
	th.failed("ip:a", "name:x")
	if w := th.wait("ip:a", "name:x"); w != 0 {
		t.Fatalf("one failure is a typo: wait %v", w)
	}
	th.failed("ip:a", "name:x")
	th.failed("ip:a", "name:x")
	if w := th.wait("name:x"); w != time.Second {
		t.Fatalf("third failure: wait %v, want 1s", w)
	}
	if w := th.wait("ip:a", "name:y"); w != time.Second {
		t.Fatalf("another name from the same address: wait %v, want 1s", w)
	}
	for i := 0; i < 20; i++ {
		th.failed("name:x")
	}
	if w := th.wait("name:x"); w != 30*time.Second {
		t.Fatalf("capped: wait %v", w)
	}
	th.succeeded("name:x")
	if w := th.wait("name:x"); w != 0 {
		t.Fatalf("after a success: wait %v", w)
	}
	now = now.Add(16 * time.Minute)
	if w := th.wait("ip:a"); w != 0 {
		t.Fatalf("forgotten after 15m: wait %v", w)
	}
}
