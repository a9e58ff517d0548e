package node

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/format/formattest"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// A node runs the scheduled gc and verify of its roots' chunk stores: the
// collection frees a chunk no backup names, and both runs show in the
// metrics hook and in the host's lease entry, where controld status reads
// them. A root without a store is passed over.
func TestScheduledStoreJobsRunAndReport(t *testing.T) {
	_, store := testenv.SlapdStore(t, testenv.SlapdOptions{})
	root, plain := t.TempDir(), t.TempDir()
	chunks := format.OpenChunkStore(root, nil)
	id := formattest.UnnamedChunk(t, chunks, []byte("a chunk of a deleted backup"), 48*time.Hour)
	var mu sync.Mutex
	ran := map[string]format.StoreJob{}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	a := New(Options{Node: "host", Store: store, Log: log, StateDir: t.TempDir(),
		StoreJobs: StoreJobs{Roots: []string{plain, root}, GC: "@every 1s", Verify: "@every 1s", VerifyParts: 1},
		OnStoreJob: func(r string, j format.StoreJob) {
			mu.Lock()
			defer mu.Unlock()
			if r != root {
				t.Errorf("a job ran on %s, which has no store", r)
			}
			ran[j.Job] = j
		}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(ran)
		mu.Unlock()
		leases, _ := store.ReadLeases(store.Tree.Nodes())
		if n == 2 && len(leases) == 1 && strings.Contains(leases[0].Reports[ldapschema.ChunkStoreReport+root], "verify") &&
			strings.Contains(leases[0].Reports[ldapschema.ChunkStoreReport+root], "gc") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs %v, leases %+v", ran, leases)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if g := ran[format.JobGC]; g.GC == nil || g.GC.Removed != 1 || g.Host != "host" || g.Failed() {
		t.Fatalf("gc: %+v", g)
	}
	if v := ran[format.JobVerify]; v.Verify == nil || v.Failed() || v.Parts != 1 {
		t.Fatalf("verify: %+v", v)
	}
	if chunks.Has(id) {
		t.Fatal("the unnamed chunk is still there")
	}
	if _, err := os.Stat(plain + "/" + format.ChunkStoreDir); !os.IsNotExist(err) {
		t.Fatalf("a store was made in a root without one: %v", err)
	}
}

func TestStoreJobsCheck(t *testing.T) {
	for _, c := range []struct {
		s  StoreJobs
		ok bool
	}{
		{StoreJobs{}, true},
		{StoreJobs{Roots: []string{"/srv/backup"}, GC: "30 12 * * *", Verify: "@daily"}, true},
		{StoreJobs{Roots: []string{"/srv/backup"}, GC: "61 12 * * *"}, false},
		{StoreJobs{GC: "@daily"}, false},
		{StoreJobs{Roots: []string{"backup"}, GC: "@daily"}, false},
		{StoreJobs{Roots: []string{"/srv/backup"}, Verify: "@daily", VerifyParts: -1}, false},
	} {
		if err := c.s.Check(); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.s, err)
		}
	}
}
