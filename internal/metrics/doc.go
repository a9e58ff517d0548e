// Package metrics serves the daemons' Prometheus metrics and health endpoint.
// The daemons record through small hooks (a step done, a write made); the
// directory-derived figures (leaves by mode, last successful backup per VM)
// are computed at scrape time from what the daemon's cache holds, so they are
// never stale and cost nothing between scrapes.
//
//	reg := prometheus.NewRegistry()
//	m := metrics.NewControl(reg, cache, tree)
//	go metrics.Serve(ctx, ":9135", reg, store.Ping, log)
package metrics
