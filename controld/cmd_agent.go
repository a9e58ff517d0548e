package main

import (
	"context"
	"flag"
	"os/signal"
	"syscall"

	"github.com/stoneycloud/stoney-conductor/controld/control"
)

func init() {
	register("agent", "run the control daemon", runAgent)
}

func runAgent(args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	var c common
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	cfg, store, err := c.open()
	if err != nil {
		return err
	}
	defer store.Close()
	log, err := newLogger(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.WithFields(map[string]any{"ldap": cfg.LDAP.URL, "timezone": cfg.location().String()}).Info("controld starting")
	limits, err := cfg.limits()
	if err != nil {
		return err
	}
	return control.New(control.Options{
		Store: store, Log: log, Workers: cfg.Workers,
		Nightly: cfg.nightly(), MaxConcurrentPerHost: cfg.MaxConcurrentPerHost,
		Limits: limits, NodeTimeout: cfg.NodeTimeout, LeaseTTL: cfg.LeaseTTL,
	}).Run(ctx)
}
