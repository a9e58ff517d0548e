package control

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/internal/workqueue"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

const (
	benchVMs   = 10000
	benchHosts = 100 // 100 VMs per host: a batch of 100 per host
)

// benchFixture is the directory of BenchmarkNightly10k as LDIF for slapadd:
// the global configuration (every VM at 03:00), the VMs, and their ou=backup
// containers (present from every night but the first).
func benchFixture(tree ldapschema.Tree) (string, []string) {
	var es []*ldap.Entry
	cfg := ldapschema.BackupConfig{CronMinute: []string{"0"}, CronHour: []string{"3"}, CronDay: []string{"*"},
		CronMonth: []string{"*"}, CronDayOfWeek: []string{"*"}, CronActive: true, Iterations: 7}
	es = append(es, ldapschema.EntryOf(ldapschema.NewBackupConfigAddRequest(tree.GlobalBackup(), cfg)))
	vms := make([]string, benchVMs)
	for i := range vms {
		vms[i] = fmt.Sprintf("vm-%05d", i)
		es = append(es, ldapschema.EntryOf(ldapschema.NewVMAddRequest(tree,
			ldapschema.VM{Name: vms[i], Node: fmt.Sprintf("node-%03d", i%benchHosts), Pool: "pool-1"})))
		backup := ldap.NewAddRequest(tree.VMBackup(vms[i]), nil)
		backup.Attribute(ldapschema.AttrObjectClass, []string{ldapschema.ClassTop, ldapschema.ClassOrganizationalUnit})
		backup.Attribute(ldapschema.AttrOU, []string{"backup"})
		es = append(es, ldapschema.EntryOf(backup))
	}
	return ldapschema.FormatLDIF(es), vms
}

// peakMemory samples the heap in use until stopped and returns the most seen.
func peakMemory() (stop func() uint64) {
	var mu sync.Mutex
	var peak uint64
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		mu.Lock()
		peak = max(peak, m.HeapInuse+m.StackInuse)
		mu.Unlock()
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			sample()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-finished
		sample()
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// BenchmarkNightly10k: 10,000 VMs in the directory, all due at 03:00. One
// operation is controld starting at the due time: loading the directory
// (the watch's first refresh) and creating that night's 10,000 leaves. The
// floor is the same slapd taking 10,000 bare adds of the same leaves (other
// names) from one client, one after the other, measured in the same run.
//
//	x-ldap-floor  controld's time / the floor (goal at most 1.3)
//	MiB-peak      most heap and stacks in use while controld ran (goal under 200)
func BenchmarkNightly10k(b *testing.B) {
	loc, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		b.Fatal(err)
	}
	due := time.Date(2024, 6, 3, 3, 0, 0, 0, loc)
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.WarnLevel)

	var ratios, loads, creates, floors float64
	var peak uint64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, err := testenv.StartSlapd(testenv.SlapdOptions{Dir: filepath.Join(b.TempDir(), "slapd"), NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		fixture, vms := benchFixture(s.Tree)
		if err := s.Stop(); err != nil {
			b.Fatal(err)
		}
		if err := s.SlapAdd(fixture); err != nil {
			b.Fatal(err)
		}
		fixture = ""
		if err := s.Restart(); err != nil {
			b.Fatal(err)
		}
		store := s.AdminStore(b)
		runtime.GC()

		fired := make(chan Fired, 1)
		c := New(Options{Store: store, Log: log, Nightly: &NightlyOptions{
			Location: loc, Clock: workqueue.NewFakeClock(due), CatchUpWindow: DefaultCatchUpWindow,
			OnFire: func(f Fired) { fired <- f },
		}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		stopPeak := peakMemory()
		b.StartTimer()
		start := time.Now()
		go func() { c.Run(ctx); close(done) }()
		if err := c.WaitPlanned(ctx); err != nil {
			b.Fatal(err)
		}
		loaded := time.Since(start)
		f := <-fired
		elapsed := time.Since(start)
		b.StopTimer()
		peak = max(peak, stopPeak())
		cancel()
		<-done
		if len(f.Created) != benchVMs {
			b.Fatalf("created %d leaves (existing %d, skipped %d, failed %d), want %d",
				len(f.Created), len(f.Existing), len(f.Skipped), len(f.Failed), benchVMs)
		}

		// The floor: the same leaves, one minute later, from one client.
		conn, err := s.Dial()
		if err != nil {
			b.Fatal(err)
		}
		name := LeafName(due.Add(time.Minute))
		stamp := fsm.FormatTime(time.Now())
		floorStart := time.Now()
		for _, vm := range vms {
			if err := conn.Add(ldapschema.NewLeafAddRequest(s.Tree, vm, name, string(fsm.Initialize), stamp)); err != nil {
				b.Fatal(err)
			}
		}
		floor := time.Since(floorStart)
		conn.Close()
		store.Close()
		if err := s.Stop(); err != nil {
			b.Fatal(err)
		}

		ratios += elapsed.Seconds() / floor.Seconds()
		loads += loaded.Seconds()
		creates += (elapsed - loaded).Seconds()
		floors += floor.Seconds()
	}
	n := float64(b.N)
	b.ReportMetric(ratios/n, "x-ldap-floor")
	b.ReportMetric(float64(peak)/(1<<20), "MiB-peak")
	b.ReportMetric(loads/n, "s-load")
	b.ReportMetric(creates/n, "s-create")
	b.ReportMetric(floors/n, "s-floor")
}
