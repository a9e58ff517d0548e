package main

import (
	"context"

	"github.com/stoneycloud/stoney-conductor/controld/web"
)

func runWeb(ctx context.Context, in *invocation) error {
	cfg := in.cfg
	if !cfg.Web.Enabled() {
		return usagef("web.listen is not set in the configuration: the web UI is off")
	}
	if err := cfg.LDAP.CheckTransport(); err != nil {
		return usageError{err}
	}
	log, err := newLogger(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	srv, err := web.New(web.Options{Config: cfg.Web, LDAP: cfg.LDAP, Location: cfg.location(), Log: log})
	if err != nil {
		return usageError{err}
	}
	scheme := "http"
	if cfg.Web.TLS() {
		scheme = "https"
	}
	log.WithField("url", scheme+"://"+cfg.Web.Listen+"/").Info("web UI serving")
	return srv.Serve(ctx)
}
