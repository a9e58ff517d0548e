package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// progressKey names the sstProvisioningExecutionTime value a long copy or
// merge keeps current while it runs (controld status shows it, and each
// write restarts controld's deadline for the step). The final answer
// replaces it.
const progressKey = "progress"

// meter follows the work of one step (copies, a merge): bytes done of all,
// rate, time left. It writes only when the work moved on since its last
// write: controld's deadline counts from the last write, so a step that
// stalls must fall silent.
type meter struct {
	a       *Agent
	j       *job
	step    string
	total   int64
	base    int64 // bytes of the files already finished
	start   time.Time
	mu      sync.Mutex
	last    time.Time
	written int64 // done at the last write
	every   time.Duration
}

// newMeter sizes the files to copy (their allocated bytes, as copied); a
// meter of no files learns its total from what it is told (measured).
func (a *Agent) newMeter(j *job, step string, paths []hostio.Path) *meter {
	m := &meter{a: a, j: j, step: step, start: time.Now(), every: a.o.ProgressEvery}
	for _, p := range paths {
		if n, err := dataSize(p); err == nil {
			m.total += n
		}
	}
	return m
}

// dataSize is the data bytes CopyFile would copy of p.
func dataSize(p hostio.Path) (int64, error) {
	f, m, err := openData(p)
	if err != nil {
		return 0, err
	}
	f.Close()
	return m.bytes, nil
}

// file returns the Progress of the next file; finished adds it to the base.
func (m *meter) file() (Progress, func(n int64)) {
	return func(done, _ int64) { m.tick(m.base + done) }, func(n int64) { m.base += n }
}

// measured is the Progress of work that reports its own total (a merge).
func (m *meter) measured() Progress {
	return func(done, total int64) {
		m.mu.Lock()
		m.total = total
		m.mu.Unlock()
		m.tick(done)
	}
}

// due says whether progress at done, now, is worth a write: the work moved
// on since the last write, and not sooner than every after it.
func (m *meter) due(done int64, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if done <= m.written || now.Sub(m.last) < m.every {
		return false
	}
	m.last, m.written = now, done
	return true
}

func (m *meter) tick(done int64) {
	now := time.Now()
	if !m.due(done, now) {
		return
	}
	m.mu.Lock()
	line := m.line(done, now)
	m.mu.Unlock()
	m.j.log.WithField("progress", line).Info(m.step)
	// Best effort: a lost progress line costs nothing, the step goes on.
	_ = m.a.o.Store.WriteProgress(m.j.leaf.DN, m.j.running, m.j.leaf.ExecutionTime, progressKey+": "+line)
}

// line reads like "retain 120.0 MiB of 512.0 MiB, 85.3 MiB/s, 5s left".
func (m *meter) line(done int64, now time.Time) string {
	el := now.Sub(m.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(done) / el
	}
	left := "?"
	if rate > 0 && m.total >= done {
		left = time.Duration(float64(m.total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	return fmt.Sprintf("%s %.1f MiB of %.1f MiB, %.1f MiB/s, %s left", m.step,
		float64(done)/(1<<20), float64(m.total)/(1<<20), rate/(1<<20), left)
}
