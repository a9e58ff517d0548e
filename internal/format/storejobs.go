package format

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// Garbage collection and verify of a store run one at a time, whoever
// starts them (a node's schedule, a node sharing the storage, an operator):
// a verify must not find a chunk gone that a collection removed under it,
// and two collections would only do the work twice. The store's lock file
// says who runs; the record of each job's last run stays in the store,
// next to the chunks it speaks of.

// ErrStoreBusy: another garbage collection or verify of the store runs.
var ErrStoreBusy = errors.New("another garbage collection or verify of this chunk store is running")

// Store jobs.
const (
	JobGC     = "gc"
	JobVerify = "verify"
)

// StoreJob is the record of one run of a store job.
type StoreJob struct {
	Job   string    `json:"job"` // JobGC or JobVerify
	Host  string    `json:"host,omitempty"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Error string    `json:"error,omitempty"`
	// Part and Parts: the share of the chunks a verify checked.
	Part   int           `json:"part,omitempty"`
	Parts  int           `json:"parts,omitempty"`
	GC     *GCResult     `json:"gc,omitempty"`
	Verify *VerifyResult `json:"verify,omitempty"`
}

// Summary is the record in one line (controld status, the node's log).
func (j StoreJob) Summary() string {
	s := j.Job + " " + j.End.UTC().Format(time.RFC3339)
	switch {
	case j.GC != nil:
		s += fmt.Sprintf(" removed=%d freed=%d waiting=%d missing=%d", j.GC.Removed, j.GC.RemovedBytes, j.GC.PendingBytes, len(j.GC.Missing))
	case j.Verify != nil:
		s += fmt.Sprintf(" part=%d/%d checked=%d bad=%d", j.Part, j.Parts, j.Verify.Checked, len(j.Verify.Bad))
	}
	if j.Error != "" {
		s += " error=" + strconv.Quote(j.Error)
	}
	if j.Host != "" {
		s += " host=" + j.Host
	}
	return s
}

// Failed says whether the job found something an operator must see: an
// error, a bad chunk, or a chunk an index names but the store lacks.
func (j StoreJob) Failed() bool {
	return j.Error != "" || (j.Verify != nil && len(j.Verify.Bad) > 0) || (j.GC != nil && len(j.GC.Missing) > 0)
}

func (s *ChunkStore) jobRecord(job string) hostio.Path { return s.Dir.MustJoin(job + ".last") }

// lockJobs takes the store's job lock, or fails with ErrStoreBusy. The
// lock is an open file description's (flock), so it goes with the process
// that held it, and NFSv4 passes it to the other hosts.
func (s *ChunkStore) lockJobs() (func(), error) {
	if _, err := s.Seam.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, err
	}
	p := s.Dir.MustJoin(".lock")
	if !hostio.Exists(p) {
		f, err := s.Seam.Create(p, 0o600) // empty: only its lock counts
		if err != nil {
			return nil, err
		}
		f.Close()
	}
	f, err := hostio.Open(p)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrStoreBusy
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

// RunGC collects the store's garbage under the job lock and keeps the
// record of the run (also of a failed one).
func RunGC(ctx context.Context, store *ChunkStore, root, host string, grace time.Duration) (StoreJob, error) {
	return runJob(store, StoreJob{Job: JobGC, Host: host}, func(j *StoreJob) error {
		r, err := CollectGarbage(ctx, store, root, grace)
		j.GC = &r
		return err
	})
}

// RunVerify verifies part of parts of the store under the job lock and
// keeps the record of the run.
func RunVerify(ctx context.Context, store *ChunkStore, root, host string, part, parts int) (StoreJob, error) {
	return runJob(store, StoreJob{Job: JobVerify, Host: host, Part: part, Parts: parts}, func(j *StoreJob) error {
		r, err := Verify(ctx, store, root, part, parts)
		j.Verify = &r
		return err
	})
}

func runJob(store *ChunkStore, j StoreJob, run func(*StoreJob) error) (StoreJob, error) {
	unlock, err := store.lockJobs()
	if err != nil {
		return j, err
	}
	defer unlock()
	j.Start = time.Now()
	err = run(&j)
	j.End = time.Now()
	if err != nil {
		j.Error = err.Error()
	}
	b, merr := json.MarshalIndent(j, "", "  ")
	if merr != nil {
		return j, merr
	}
	p := store.jobRecord(j.Job)
	tmp := p.Dir().MustJoin(p.Base() + ".tmp")
	werr := writeWhole(store.Seam, tmp, p, 0o600, func(f *os.File) error { return store.Seam.Write(f, append(b, '\n'), 0) })
	return j, errors.Join(err, werr)
}

// PartOfDay is the part of parts a daily verify checks on day t: every
// part once in parts days.
func PartOfDay(t time.Time, parts int) int {
	if parts < 1 {
		return 0
	}
	return int(t.Unix()/86400) % parts
}

// ReadStoreJobs returns the records of the store's last jobs (none: an
// empty map).
func ReadStoreJobs(store *ChunkStore) (map[string]StoreJob, error) {
	out := map[string]StoreJob{}
	for _, job := range []string{JobGC, JobVerify} {
		b, err := hostio.ReadFile(store.jobRecord(job))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return out, err
		}
		var j StoreJob
		if err := json.Unmarshal(b, &j); err != nil {
			return out, fmt.Errorf("%s: %w", store.jobRecord(job), err)
		}
		out[job] = j
	}
	return out, nil
}
