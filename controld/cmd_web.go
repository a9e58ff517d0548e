package main

import (
	"context"
	"flag"
	"os/signal"
	"syscall"

	"github.com/stoneycloud/stoney-conductor/controld/web"
)

func init() {
	register("web", "serve the web UI (web: in the config)", runWeb)
}

func runWeb(args []string) error {
	fs := flag.NewFlagSet("web", flag.ContinueOnError)
	var c common
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	cfg, err := loadConfig(c.config)
	if err != nil {
		return err
	}
	if !cfg.Web.Enabled() {
		return usagef("%s: web.listen is not set: the web UI is off", c.config)
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	scheme := "http"
	if cfg.Web.TLS() {
		scheme = "https"
	}
	log.WithField("url", scheme+"://"+cfg.Web.Listen+"/").Info("web UI serving")
	return srv.Serve(ctx)
}
