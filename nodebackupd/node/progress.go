package node

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// progressKey names the sstProvisioningExecutionTime value a long copy keeps
// current while it runs (controld status shows it, and each write restarts
// controld's deadline for the step). The final answer replaces it.
const progressKey = "progress"

// meter follows the copies of one step: bytes done of all, rate, time left.
type meter struct {
	a      *Agent
	j      *job
	step   string
	total  int64
	base   int64 // bytes of the files already finished
	start  time.Time
	mu     sync.Mutex
	last   time.Time
	every  time.Duration
	report func(done int64)
}

// newMeter sizes the files to copy (their allocated bytes, as copied).
func (a *Agent) newMeter(j *job, step string, paths []string) *meter {
	m := &meter{a: a, j: j, step: step, start: time.Now(), every: a.o.ProgressEvery}
	for _, p := range paths {
		if n, err := dataSize(p); err == nil {
			m.total += n
		}
	}
	return m
}

func dataSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	segs, err := dataSegments(f, st.Size())
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range segs {
		n += s.end - s.off
	}
	return n, nil
}

// file returns the Progress of the next file; finished adds it to the base.
func (m *meter) file() (Progress, func(n int64)) {
	return func(done, _ int64) { m.tick(m.base + done) }, func(n int64) { m.base += n }
}

func (m *meter) tick(done int64) {
	m.mu.Lock()
	now := time.Now()
	if now.Sub(m.last) < m.every {
		m.mu.Unlock()
		return
	}
	m.last = now
	m.mu.Unlock()
	line := m.line(done, now)
	m.j.log.WithField("progress", line).Info("copying")
	m.a.o.Store.Update(m.j.leaf.DN, "("+ldapschema.AttrMode+"="+m.j.running+")", map[string][]string{
		ldapschema.AttrExecutionTime: mergeExecutionTimes(m.j.leaf.ExecutionTime, []string{progressKey + ": " + line}),
	})
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
