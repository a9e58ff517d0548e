package web_test

import (
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// session logs in with a client of its own and returns it with the token
// its pages carry.
func session(t *testing.T, name string) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	_, body, err := get(c, "/login")
	if err != nil {
		t.Fatal(err)
	}
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the login form carries no token:\n%s", body)
	}
	resp, err := c.PostForm(env.url+"/login", url.Values{"csrf": {m[1]}, "name": {name}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, body, err = get(c, "/vm/"+vmIdle)
	if err != nil {
		t.Fatal(err)
	}
	if m = csrfField.FindStringSubmatch(body); m == nil {
		t.Fatalf("not logged in as %s:\n%s", name, body)
	}
	return c, m[1]
}

// A form posted without its session's token, or with another session's, is
// refused and changes nothing; so is a login without the form's token.
func TestCSRF(t *testing.T) {
	mine, _ := session(t, operator)
	_, theirs := session(t, operator)
	before := len(leaves(t, vmIdle))
	for what, form := range map[string]url.Values{
		"no token":          {},
		"another session's": {"csrf": {theirs}},
		"an empty token":    {"csrf": {""}},
	} {
		resp, err := mine.PostForm(env.url+"/vm/"+vmIdle+"/backup", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("Back up now with %s: status %d, want 403", what, resp.StatusCode)
		}
	}
	if n := len(leaves(t, vmIdle)); n != before {
		t.Fatalf("a refused form created a leaf (%d leaves, were %d)", n, before)
	}
	// Login without the form's token: refused before any bind.
	resp, err := http.PostForm(env.url+"/login", url.Values{"name": {operator}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("login without a token: status %d, want 403", resp.StatusCode)
	}
	// The session cookie is HttpOnly and SameSite=Strict.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	_, body, _ := get(c, "/login")
	tok := csrfField.FindStringSubmatch(body)[1]
	resp, err = c.PostForm(env.url+"/login", url.Values{"csrf": {tok}, "name": {operator}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var set string
	for _, h := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(h, "stoney_session=") {
			set = h
		}
	}
	if !strings.Contains(set, "HttpOnly") || !strings.Contains(set, "SameSite=Strict") {
		t.Errorf("session cookie %q", set)
	}
}
