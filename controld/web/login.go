package web

import (
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// The messages a failed login shows: one for every wrong name or password,
// so the page tells nobody which accounts exist.
const (
	msgBadLogin    = "Login failed: wrong name or password."
	msgTooMany     = "Too many failed logins: wait a minute, then try again."
	msgUnreachable = "The directory cannot be reached; try again later."
)

// maxLoginWait is the longest a login attempt is held back; attempts that
// would wait longer are refused without trying.
const maxLoginWait = 5 * time.Second

type loginData struct {
	Token, Name, Error string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.sessions.get(r) != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.renderLogin(w, r, http.StatusOK, "", "")
}

// renderLogin shows the form with a fresh token, the same value in a cookie
// (double submit: a form from elsewhere cannot read the cookie).
func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, code int, name, msg string) {
	tok := randomToken()
	s.setCookie(w, loginCookie, tok, 0)
	s.render(w, r, code, "login", page{Title: "Log in", Data: loginData{Token: tok, Name: name, Error: msg}})
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	c, err := r.Cookie(loginCookie)
	tok := r.PostFormValue("csrf")
	if err != nil || tok == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(tok)) != 1 {
		http.Error(w, "this login form does not carry its token (CSRF check failed); reload the page", http.StatusForbidden)
		return
	}
	name, pw := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("password")
	ipKey, nameKey := "ip:"+clientIP(r), "name:"+strings.ToLower(name)
	wait := s.throttle.wait(ipKey, nameKey)
	if wait > maxLoginWait {
		s.renderLogin(w, r, http.StatusTooManyRequests, name, msgTooMany)
		return
	}
	if wait > 0 {
		select {
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
	}
	dn, err := s.o.bindDN(name)
	if err != nil || pw == "" { // an empty password would be an anonymous bind
		s.throttle.failed(ipKey, nameKey)
		s.renderLogin(w, r, http.StatusUnauthorized, name, msgBadLogin)
		return
	}
	opts := s.o.LDAP
	opts.BindDN, opts.Password, opts.PasswordFile = dn, pw, ""
	store, err := ldapschema.Dial(opts)
	if err != nil {
		log := s.o.Log.WithField("user", dn).WithField("client", clientIP(r))
		if errors.Is(err, ldapschema.ErrUnavailable) {
			log.WithError(err).Error("web: directory unreachable at login")
			s.renderLogin(w, r, http.StatusServiceUnavailable, name, msgUnreachable)
			return
		}
		log.WithError(err).Warn("web: login refused")
		s.throttle.failed(ipKey, nameKey)
		s.renderLogin(w, r, http.StatusUnauthorized, name, msgBadLogin)
		return
	}
	s.throttle.succeeded(nameKey)
	sess := s.sessions.create(dn, store)
	s.o.Log.WithField("user", dn).Info("web: logged in")
	s.setCookie(w, loginCookie, "", -1)
	s.setCookie(w, sessionCookie, sess.id, 0)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	s.sessions.end(sess)
	s.setCookie(w, sessionCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
