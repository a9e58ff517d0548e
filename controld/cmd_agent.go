package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/metrics"
)

func runAgent(ctx context.Context, in *invocation) error {
	cfg, store := in.cfg, in.store
	log, err := newLogger(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}
	log.WithFields(map[string]any{"ldap": cfg.LDAP.URL, "timezone": cfg.location().String()}).Info("controld starting")
	limits, err := cfg.limits()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	var m *metrics.Control
	ctl := control.New(control.Options{
		Store: store, Log: log, Workers: cfg.Workers,
		Nightly: cfg.nightly(), MaxConcurrentPerHost: cfg.MaxConcurrentPerHost,
		Limits: limits, NodeTimeout: cfg.NodeTimeout, LeaseTTL: cfg.LeaseTTL,
		OnWrite:          func(w fsm.Write) { m.Write(string(w.To), w.ReturnValue) },
		OnWatchError:     func(error) { m.WatchReconnect() },
		OnReconcileError: func(kind string) { m.ReconcileError(kind) },
	})
	m = metrics.NewControl(reg, ctl.Cache(), store.Tree)
	m.Nightly(reg, func() map[string]uint64 {
		s := ctl.NightlyStats()
		return map[string]uint64{"created": s.Created, "skipped_busy": s.SkippedBusy, "failed": s.Failed,
			"caught_up": s.CaughtUp, "retention_deletes": s.RetentionDeletes}
	})
	if cfg.Metrics.Listen != "" {
		go metrics.Serve(ctx, cfg.Metrics.Listen, reg, store.Ping, log)
	}
	return ctl.Run(ctx)
}
