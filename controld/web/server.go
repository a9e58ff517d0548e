package web

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

//go:embed templates static
var assets embed.FS

// Options configure a Server.
type Options struct {
	Config
	// LDAP says how to reach the directory. Its BindDN, Password and
	// PasswordFile are not used: each person binds as themselves.
	LDAP     ldapschema.StoreOptions
	Location *time.Location // the zone times are shown in; default time.Local
	Log      logrus.FieldLogger
	Now      func() time.Time // default time.Now; tests move it
}

// Server is the web UI: an http.Handler plus its sessions.
type Server struct {
	o        Options
	pages    map[string]*template.Template
	mux      *http.ServeMux
	sessions *sessions
	throttle *throttle
	tls      *tls.Config // nil: plain HTTP
}

// New checks the options and prepares the handlers.
func New(o Options) (*Server, error) {
	if err := o.Config.Check(); err != nil {
		return nil, err
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.WarnLevel)
		o.Log = l
	}
	s := &Server{o: o, sessions: newSessions(o.IdleTimeout, o.Now), throttle: newThrottle(o.Now)}
	if o.TLS() {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("web: certificate: %w", err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var err error
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.authed(s.logout))
	m.HandleFunc("GET /{$}", s.authed(s.overviewPage))
	m.HandleFunc("GET /vm/{vm}", s.authed(s.vmPage))
	m.HandleFunc("POST /vm/{vm}/backup", s.authed(s.backupNow))
	m.HandleFunc("POST /vm/{vm}/restore", s.authed(s.restoreStart))
	m.HandleFunc("POST /vm/{vm}/restore/continue", s.authed(s.restoreContinue))
	m.HandleFunc("POST /vm/{vm}/restore/cancel", s.authed(s.restoreCancel))
	m.HandleFunc("GET /schedule", s.authed(s.schedulePage))
	m.HandleFunc("GET /events", s.authed(s.events))
	s.mux = m
}

// ServeHTTP sets the headers every answer carries and dispatches.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if s.o.TLS() {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	s.mux.ServeHTTP(w, r)
}

// authed runs h with the request's session; without one a page goes to the
// login form, anything else is refused.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess := s.sessions.get(r)
		if sess == nil {
			if r.Method == http.MethodGet && r.URL.Path != "/events" {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in, or the session ended", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !sess.validCSRF(r) {
				s.o.Log.WithField("user", sess.dn).Warn("web: form without this session's token refused")
				http.Error(w, "this form does not carry this session's token (CSRF check failed); reload the page and try again", http.StatusForbidden)
				return
			}
		}
		h(w, r, sess)
	}
}

// Serve listens on the configured address until ctx is done.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.o.Listen)
	if err != nil {
		return fmt.Errorf("web: %w", err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln (TLS when configured) until ctx is done.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	if s.tls != nil {
		hs.TLSConfig = s.tls
		ln = tls.NewListener(ln, s.tls)
	}
	go s.sweep(ctx)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	err := hs.Serve(ln)
	s.sessions.endAll()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) sweep(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sessions.sweep()
		}
	}
}

// Close ends every session (tests that use the Server as a Handler).
func (s *Server) Close() { s.sessions.endAll() }

// setCookie writes a cookie the way every cookie of ours is: HttpOnly,
// SameSite=Strict, Secure under TLS.
func (s *Server) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.o.TLS()})
}
