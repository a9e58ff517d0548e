package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// StoreJobs schedules the garbage collection and verify of chunk stores.
// They run in the node because only the hosts mount the backup storage, and
// only while this process holds the host's lease: one runner per host, and
// the store's own lock keeps hosts that share a root from running together.
type StoreJobs struct {
	// Roots are the backup roots whose stores this host looks after; a root
	// without a chunk store is passed over.
	Roots []string `yaml:"roots"`
	// GC and Verify are cron specs (five fields, or @daily and the like) in
	// the host's time zone; empty: the job does not run on its own.
	GC     string `yaml:"gc"`
	Verify string `yaml:"verify"`
	// Grace keeps unnamed chunks touched less than this long ago (default
	// format.DefaultGrace, longer than a retain runs).
	Grace time.Duration `yaml:"grace"`
	// VerifyParts splits the store: each verify checks one part, the next
	// day's the next (default 7: all chunks within a week of daily runs).
	VerifyParts int `yaml:"verifyParts"`
}

// storeJobParser reads the specs as crontab(5) does, descriptors included.
var storeJobParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Check refuses what the node could not run, before it starts.
func (s StoreJobs) Check() error {
	for _, spec := range []struct{ key, v string }{{"gc", s.GC}, {"verify", s.Verify}} {
		if spec.v == "" {
			continue
		}
		if _, err := storeJobParser.Parse(spec.v); err != nil {
			return fmt.Errorf("chunks.%s %q: %w", spec.key, spec.v, err)
		}
	}
	for _, r := range s.Roots {
		if !filepath.IsAbs(r) {
			return fmt.Errorf("chunks.roots: %q is not an absolute path", r)
		}
	}
	if (s.GC != "" || s.Verify != "") && len(s.Roots) == 0 {
		return errors.New("chunks.roots: name the backup roots to collect and verify")
	}
	if s.Grace < 0 || s.VerifyParts < 0 {
		return errors.New("chunks.grace and chunks.verifyParts must not be negative")
	}
	return nil
}

func (s StoreJobs) enabled() bool { return s.GC != "" || s.Verify != "" }

// storeJobFunc runs one job on one store.
type storeJobFunc func(ctx context.Context, store *format.ChunkStore, root string, now time.Time) (format.StoreJob, error)

// storeJob is the job called name, with this node's settings.
func (a *Agent) storeJob(name string) storeJobFunc {
	grace, parts := a.o.StoreJobs.Grace, a.o.StoreJobs.VerifyParts
	if grace == 0 {
		grace = format.DefaultGrace
	}
	if parts == 0 {
		parts = 7
	}
	if name == format.JobGC {
		return func(ctx context.Context, st *format.ChunkStore, root string, _ time.Time) (format.StoreJob, error) {
			return format.RunGC(ctx, st, root, a.o.Node, grace)
		}
	}
	return func(ctx context.Context, st *format.ChunkStore, root string, now time.Time) (format.StoreJob, error) {
		return format.RunVerify(ctx, st, root, a.o.Node, format.PartOfDay(now, parts), parts)
	}
}

// runStoreJobs fires the scheduled jobs until ctx ends.
func (a *Agent) runStoreJobs(ctx context.Context) {
	s := a.o.StoreJobs
	type sched struct {
		name string
		spec cron.Schedule
		run  storeJobFunc
	}
	var jobs []sched
	for name, spec := range map[string]string{format.JobGC: s.GC, format.JobVerify: s.Verify} {
		if p, err := storeJobParser.Parse(spec); spec != "" && err == nil { // Check refused bad specs
			jobs = append(jobs, sched{name, p, a.storeJob(name)})
		}
	}
	next := make([]time.Time, len(jobs))
	for i, j := range jobs {
		next[i] = j.spec.Next(a.o.Now())
	}
	for len(jobs) > 0 {
		first := 0
		for i := range next {
			if next[i].Before(next[first]) {
				first = i
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next[first])):
		}
		now := a.o.Now()
		for _, root := range s.Roots {
			a.runStoreJob(ctx, jobs[first].name, root, now, jobs[first].run)
		}
		// From the end: a job that outran its next time does not run twice.
		next[first] = jobs[first].spec.Next(a.o.Now())
	}
}

// runStoreJob runs one job on root's store, logs it, and reports it in the
// metrics and in the host's lease entry (controld status shows it).
func (a *Agent) runStoreJob(ctx context.Context, name, root string, now time.Time, run storeJobFunc) {
	log := a.o.Log.WithFields(logrus.Fields{"job": name, "root": root})
	store := format.OpenChunkStore(root, a.o.Seam)
	if !hostio.Exists(store.Dir) {
		log.Debug("no chunk store in this root")
		return
	}
	j, err := run(ctx, store, root, now)
	switch {
	case errors.Is(err, format.ErrStoreBusy):
		log.Info("another garbage collection or verify of this store runs; this one is skipped")
		return
	case err != nil && j.End.IsZero():
		log.WithError(err).Error("chunk store job could not start")
		return
	case j.Failed():
		log.WithField("summary", j.Summary()).Error("chunk store job found problems")
	default:
		log.WithField("summary", j.Summary()).Info("chunk store job done")
	}
	if a.o.OnStoreJob != nil {
		a.o.OnStoreJob(root, j)
	}
	a.publishStoreJobs(store, root)
}

// publishStoreJobs puts the store's last gc and verify into the lease entry.
func (a *Agent) publishStoreJobs(store *format.ChunkStore, root string) {
	recs, err := format.ReadStoreJobs(store)
	if err != nil {
		a.o.Log.WithError(err).Warn("chunk store records")
		return
	}
	var parts []string
	for _, job := range []string{format.JobGC, format.JobVerify} {
		if r, ok := recs[job]; ok {
			parts = append(parts, r.Summary())
		}
	}
	if err := a.lease.Publish(ldapschema.ChunkStoreReport+root, strings.Join(parts, "; ")); err != nil {
		a.o.Log.WithError(err).Warn("cannot publish the chunk store report")
	}
}
