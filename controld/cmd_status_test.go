package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// What a node published of its chunk stores next to its lease is what
// controld status prints after the VMs; other reports are not stores.
func TestStatusShowsChunkStoreReports(t *testing.T) {
	_, store := testenv.SlapdStore(t, testenv.SlapdOptions{})
	l := &ldapschema.Lease{Store: store, DN: store.Tree.NodeLease("kvm-01"), Holder: "h", TTL: time.Minute}
	if ok, _, err := l.Acquire(time.Now()); err != nil || !ok {
		t.Fatal(ok, err)
	}
	report := "gc 2026-11-29T12:30:00Z removed=3 freed=12582912 waiting=0 missing=0 host=kvm-01"
	for k, v := range map[string]string{ldapschema.ChunkStoreReport + "/srv/backup": report, "other": "not a store"} {
		if err := l.Publish(k, v); err != nil {
			t.Fatal(err)
		}
	}
	reports, err := control.StoreReports(store)
	if err != nil || len(reports) != 1 || reports[0] != (control.StoreReport{Node: "kvm-01", Root: "/srv/backup", Report: report}) {
		t.Fatalf("reports: %+v %v", reports, err)
	}
	var b bytes.Buffer
	if err := printStoreReports(&b, reports); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(b.String()), "\n"); len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "CHUNK STORE") || !strings.HasPrefix(lines[1], "/srv/backup  kvm-01") || !strings.HasSuffix(lines[1], report) {
		t.Fatalf("printed:\n%s", b.String())
	}
}
