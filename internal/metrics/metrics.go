package metrics

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Serve answers /metrics and /healthz (200 while health returns nil) on addr
// until ctx ends. A failing endpoint is logged; it never stops the daemon.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, health func(context.Context) error, log logrus.FieldLogger) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		hctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := health(hctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.WithError(err).Error("metrics endpoint")
	}
}

// ExecutionTimes reads the node's "name: value" execution times.
func ExecutionTimes(values []string) map[string]float64 {
	out := map[string]float64{}
	for _, v := range values {
		k, val, ok := strings.Cut(v, ":")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[strings.TrimSpace(k)] = f
		}
	}
	return out
}

// daemonCounters is what each daemon counts alike: its failed reconciles by
// kind (error, panic, terminal), so that none goes unseen, and its broken
// directory watch sessions. side names the daemon in the reconnect metric
// ("node", "control"), as dashboards know it.
type daemonCounters struct {
	errs      *prometheus.CounterVec
	reconnect prometheus.Counter
}

func newDaemonCounters(reg prometheus.Registerer, daemon, side string) daemonCounters {
	d := daemonCounters{
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stoney_reconcile_errors_total", Help: "Reconciles that failed, by kind: error (retried), panic (recovered, retried), terminal (not retried).",
			ConstLabels: prometheus.Labels{"daemon": daemon},
		}, []string{"kind"}),
		reconnect: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stoney_" + side + "_watch_reconnects_total", Help: "Times the directory watch broke and was resumed.",
		}),
	}
	reg.MustRegister(d.errs, d.reconnect)
	return d
}

// ReconcileError counts one failed reconcile of the given kind.
func (d daemonCounters) ReconcileError(kind string) { d.errs.WithLabelValues(kind).Inc() }

// WatchReconnect counts a broken watch session.
func (d daemonCounters) WatchReconnect() { d.reconnect.Inc() }

// Node is what nodebackupd records.
type Node struct {
	daemonCounters
	steps     *prometheus.HistogramVec
	failures  *prometheus.CounterVec
	copied    prometheus.Counter
	downtime  prometheus.Histogram
	storeJobs storeJobs
}

// storeJobs are the figures of the chunk store jobs a node ran, by root.
type storeJobs struct {
	last    *prometheus.GaugeVec
	failed  *prometheus.GaugeVec
	freed   *prometheus.CounterVec
	waiting *prometheus.GaugeVec
	bad     *prometheus.GaugeVec
}

// NewNode registers the node daemon's metrics.
func NewNode(reg prometheus.Registerer) *Node {
	n := &Node{
		daemonCounters: newDaemonCounters(reg, "nodebackupd", "node"),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "stoney_node_step_seconds", Help: "Duration of the steps this node carried out, by request mode.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16),
		}, []string{"mode"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stoney_node_step_failures_total", Help: "Steps answered with a non-zero return value, by mode and code.",
		}, []string{"mode", "code"}),
		copied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "stoney_node_copied_bytes_total", Help: "Data bytes copied to and from the backup location.",
		}),
		downtime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "stoney_node_downtime_seconds", Help: "How long running VMs were stopped for their snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.25, 1.5, 16),
		}),
		storeJobs: storeJobs{
			last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "stoney_chunk_store_job_last_timestamp_seconds", Help: "When this node's last garbage collection or verify of a chunk store ended.",
			}, []string{"root", "job"}),
			failed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "stoney_chunk_store_job_failed", Help: "1 if the last job failed or found bad or missing chunks, else 0.",
			}, []string{"root", "job"}),
			freed: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "stoney_chunk_store_freed_bytes_total", Help: "Bytes of chunks garbage collection removed.",
			}, []string{"root"}),
			waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "stoney_chunk_store_waiting_bytes", Help: "Bytes of chunks no backup names that the next collection after their grace period frees.",
			}, []string{"root"}),
			bad: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "stoney_chunk_store_bad_chunks", Help: "Damaged or missing chunks the last verify found.",
			}, []string{"root"}),
		},
	}
	j := n.storeJobs
	reg.MustRegister(n.steps, n.failures, n.copied, n.downtime, j.last, j.failed, j.freed, j.waiting, j.bad)
	return n
}

// StoreJob records a garbage collection (freed and waiting bytes) or a
// verify (bad chunks) of the chunk store of root.
func (n *Node) StoreJob(root string, r format.StoreJob) {
	j := n.storeJobs
	j.last.WithLabelValues(root, r.Job).Set(float64(r.End.Unix()))
	failed := 0.0
	if r.Failed() {
		failed = 1
	}
	j.failed.WithLabelValues(root, r.Job).Set(failed)
	if r.GC != nil {
		j.freed.WithLabelValues(root).Add(float64(r.GC.RemovedBytes))
		j.waiting.WithLabelValues(root).Set(float64(r.GC.PendingBytes))
	}
	if r.Verify != nil {
		j.bad.WithLabelValues(root).Set(float64(len(r.Verify.Bad)))
	}
}

// Step records one answered step and the execution times it reported.
func (n *Node) Step(mode string, seconds float64, rc int, times []string) {
	n.steps.WithLabelValues(mode).Observe(seconds)
	if rc != 0 {
		n.failures.WithLabelValues(mode, strconv.Itoa(rc)).Inc()
	}
	t := ExecutionTimes(times)
	if d, ok := t["downtime"]; ok && d > 0 {
		n.downtime.Observe(d)
	}
	for _, k := range []string{"retainBytes", "unretainBytes"} {
		if b, ok := t[k]; ok {
			n.copied.Add(b)
		}
	}
}

// Control is what controld records, plus figures read from its cache.
type Control struct {
	daemonCounters
	writes   *prometheus.CounterVec
	failures *prometheus.CounterVec
}

// NewControl registers controld's metrics; cache and tree feed the
// directory-derived ones at scrape time.
func NewControl(reg prometheus.Registerer, cache *ldapschema.Cache, tree ldapschema.Tree) *Control {
	c := &Control{
		daemonCounters: newDaemonCounters(reg, "controld", "control"),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stoney_control_writes_total", Help: "Modes controld wrote, by target mode.",
		}, []string{"mode"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stoney_control_failed_leaves_total", Help: "Leaves finished with a non-zero return value, by code.",
		}, []string{"code"}),
	}
	reg.MustRegister(c.writes, c.failures, &leafCollector{cache: cache, tree: tree})
	return c
}

// Nightly exports the scheduler's counters, read at scrape time.
func (c *Control) Nightly(reg prometheus.Registerer, read func() map[string]uint64) {
	for _, name := range []string{"created", "skipped_busy", "failed", "caught_up", "retention_deletes"} {
		name := name
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "stoney_nightly_" + name + "_total",
			Help: "Scheduled backups: " + strings.ReplaceAll(name, "_", " ") + ".",
		}, func() float64 { return float64(read()[name]) }))
	}
}

// Write records a mode controld wrote.
func (c *Control) Write(to string, rc *int) {
	c.writes.WithLabelValues(to).Inc()
	if to == "finished" && rc != nil && *rc != 0 {
		c.failures.WithLabelValues(strconv.Itoa(*rc)).Inc()
	}
}

var (
	leavesDesc = prometheus.NewDesc("stoney_leaves", "Backup leaves in the directory, by mode.", []string{"mode"}, nil)
	lastDesc   = prometheus.NewDesc("stoney_last_success_timestamp_seconds",
		"When the newest successful backup of each VM finished (its State).", []string{"vm"}, nil)
	stepDesc = prometheus.NewDesc("stoney_last_backup_step_seconds",
		"Execution times of each VM's newest successful backup, by step (snapshot, downtime, merge, retain).", []string{"vm", "step"}, nil)
	bytesDesc = prometheus.NewDesc("stoney_last_backup_bytes",
		"Bytes copied to the backup location by each VM's newest successful backup.", []string{"vm"}, nil)
	restoreDesc = prometheus.NewDesc("stoney_last_restore_return_value",
		"Return value of each VM's newest recorded restore (0 done or cancelled), by leaf and result; the backup's own outcome is not changed by it.",
		[]string{"vm", "leaf", "result"}, nil)
)

// goodBackup reads a leaf's backup outcome by fsm's rule: a restore's
// failure recorded on the leaf is not the backup's.
func goodBackup(l ldapschema.Leaf) bool {
	m, err := fsm.ParseMode(l.Mode)
	if err != nil || m != fsm.Finished {
		return false
	}
	fl := fsm.Leaf{Mode: m, ReturnValue: l.ReturnValue, Backup: l.Backup}
	if r := l.LastRestore; r != nil {
		fl.LastRestore = &fsm.RestoreOutcome{Result: fsm.RestoreResult(r.Result), Code: r.Code, Step: fsm.Mode(r.Step), At: r.At}
	}
	rc, known := fl.BackupOutcome()
	return known && rc == 0
}

// leafCollector derives figures from the cached leaves at scrape time.
type leafCollector struct {
	cache *ldapschema.Cache
	tree  ldapschema.Tree
}

func (l *leafCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- leavesDesc
	ch <- lastDesc
	ch <- stepDesc
	ch <- bytesDesc
	ch <- restoreDesc
}

func (l *leafCollector) Collect(ch chan<- prometheus.Metric) {
	byMode := map[string]float64{}
	newest := map[string]ldapschema.Leaf{}
	restored := map[string]ldapschema.Leaf{}
	l.cache.Each(func(e *ldap.Entry) {
		if !ldapschema.IsLeaf(e) {
			return
		}
		leaf, err := ldapschema.ParseLeaf(l.tree, e)
		if err != nil {
			return
		}
		byMode[leaf.Mode]++
		if r := leaf.LastRestore; r != nil {
			if cur, ok := restored[leaf.VM]; !ok || r.At > cur.LastRestore.At {
				restored[leaf.VM] = leaf
			}
		}
		if goodBackup(leaf) && leaf.State != fsm.Pending {
			if cur, ok := newest[leaf.VM]; !ok || leaf.Name > cur.Name {
				newest[leaf.VM] = leaf
			}
		}
	})
	for m, n := range byMode {
		ch <- prometheus.MustNewConstMetric(leavesDesc, prometheus.GaugeValue, n, m)
	}
	for vm, leaf := range restored {
		ch <- prometheus.MustNewConstMetric(restoreDesc, prometheus.GaugeValue, float64(leaf.LastRestore.Code), vm, leaf.Name, leaf.LastRestore.Result)
	}
	for vm, leaf := range newest {
		when := leaf.State
		if leaf.LastRestore != nil {
			when = leaf.Name // State is the restore's since; the backup's time is its name
		}
		if t, err := fsm.ParseTime(when); err == nil {
			ch <- prometheus.MustNewConstMetric(lastDesc, prometheus.GaugeValue, float64(t.Unix()), vm)
		}
		for k, v := range ExecutionTimes(leaf.ExecutionTime) {
			switch k {
			case "retainBytes":
				ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.GaugeValue, v, vm)
			case "snapshot", "downtime", "merge", "retain":
				ch <- prometheus.MustNewConstMetric(stepDesc, prometheus.GaugeValue, v, vm, k)
			}
		}
	}
}
