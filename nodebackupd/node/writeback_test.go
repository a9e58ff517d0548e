package node

import (
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/go-ldap/ldap/v3"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// writeBackAgent is an agent on a slapd of the test's own, with one VM
// (two disks and a backup plan) in the directory.
func writeBackAgent(t *testing.T, vm string) *Agent {
	t.Helper()
	_, store := testenv.SlapdStore(t, testenv.SlapdOptions{})
	dir := t.TempDir()
	disks := []testenv.DiskSpec{{Target: "vda", Path: filepath.Join(dir, vm+"-vda.qcow2")}, {Target: "vdb", Path: filepath.Join(dir, vm+"-vdb.qcow2")}}
	cfg := testenv.LocalConfig(dir, dir, dir)
	if err := testenv.VMEntries(store, "host", "pool-a", vm, disks, &cfg); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	return New(Options{Node: "host", Store: store, Log: log, StateDir: t.TempDir()})
}

// subtree is the VM's entries a write-back owns: DN -> sorted attribute lines.
func subtree(t *testing.T, a *Agent, vm string) map[string]string {
	t.Helper()
	es, err := a.o.Store.SubtreeEntries(a.tree.VM(vm))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range es {
		n, backup := ldapschema.NormalizeDN(e.DN), ldapschema.NormalizeDN(a.tree.VMBackup(vm))
		if isLeaf(e) || n == backup || strings.HasSuffix(n, ","+backup) {
			continue
		}
		var lines []string
		for _, at := range e.Attributes {
			vs := append([]string(nil), at.Values...)
			sort.Strings(vs)
			lines = append(lines, strings.ToLower(at.Name)+"="+strings.Join(vs, "|"))
		}
		sort.Strings(lines)
		out[ldapschema.NormalizeDN(e.DN)] = strings.Join(lines, "\n")
	}
	return out
}

func entries(t *testing.T, a *Agent, vm string) []*ldap.Entry {
	t.Helper()
	es, err := a.o.Store.SubtreeEntries(a.tree.VM(vm))
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func hasAll(have map[string]string, of map[string]string) bool {
	for dn := range of {
		if _, ok := have[dn]; !ok {
			return false
		}
	}
	return true
}

// Finding 4: the write-back of the saved entries, interrupted at any of its
// writes (a lost connection, a killed node), leaves the VM's subtree with
// every entry of one version or the other (never an entry deleted before the
// backup's were added), and a re-run completes it to exactly the backup's.
func TestWriteBackIsResumable(t *testing.T) {
	const vm = "wbvm"
	a := writeBackAgent(t, vm)
	j := &job{vm: ldapschema.VM{Name: vm, Node: "host"}}
	saved := entries(t, a, vm)
	want := subtree(t, a, vm)

	// Today's VM: renamed, vdb removed since the backup, vdc added.
	st := a.o.Store
	if err := st.Update(a.tree.VM(vm), "", map[string][]string{ldapschema.AttrDisplayName: {"renamed"}}); err != nil {
		t.Fatal(err)
	}
	var vdb string
	for _, e := range saved {
		if strings.HasPrefix(strings.ToLower(e.DN), "sstdisk=vdb,") {
			vdb = e.DN
		}
	}
	if vdb == "" {
		t.Fatal("no vdb entry")
	}
	if err := st.Delete(vdb); err != nil {
		t.Fatal(err)
	}
	if err := st.Add(ldapschema.NewDiskAddRequest(a.tree, vm, ldapschema.Disk{Target: "vdc", SourceFile: "/pool/pool-a/" + vm + "-vdc.qcow2"})); err != nil {
		t.Fatal(err)
	}
	today := entries(t, a, vm)
	now := subtree(t, a, vm)
	if hasAll(now, want) || hasAll(want, now) {
		t.Fatal("today's subtree is not a different one")
	}

	// The write-back's operations, counted on an uninterrupted run.
	var ops []string
	j.seam = &hostio.Seam{Trace: func(n int, op string) { ops = append(ops, op) }}
	if err := a.writeBack(j, saved); err != nil {
		t.Fatal(err)
	}
	if got := subtree(t, a, vm); !maps.Equal(got, want) {
		t.Fatalf("write-back:\n%v\nwant\n%v", got, want)
	}
	if len(ops) != 3 {
		t.Fatalf("operations %v: want modify, add, delete", ops)
	}
	for n := 1; n <= len(ops); n++ {
		j.seam = nil
		if err := a.writeBack(j, today); err != nil { // today's VM again
			t.Fatal(err)
		}
		s := &hostio.Seam{}
		s.Arm(hostio.Fault{Kind: hostio.FailWith, N: n, Errno: syscall.EIO})
		j.seam = s
		if err := a.writeBack(j, saved); !errors.Is(err, hostio.ErrInjected) {
			t.Fatalf("write %d (%s): %v", n, ops[n-1], err)
		}
		mid := subtree(t, a, vm)
		if !hasAll(mid, now) && !hasAll(mid, want) {
			t.Fatalf("interrupted at %s, the subtree has neither version's entries:\n%v", ops[n-1], slices.Sorted(maps.Keys(mid)))
		}
		j.seam = nil
		if err := a.writeBack(j, saved); err != nil {
			t.Fatalf("re-run after %s: %v", ops[n-1], err)
		}
		if got := subtree(t, a, vm); !maps.Equal(got, want) {
			t.Fatalf("re-run after %s:\n%v\nwant\n%v", ops[n-1], got, want)
		}
		if err := a.writeBack(j, saved); err != nil { // and once more: nothing to do
			t.Fatal(err)
		}
	}
}
