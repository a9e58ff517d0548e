package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/metrics"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/nodebackupd/node"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	text, err := testenv.HTTPGet(url)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// After a backup both daemons' metrics endpoints show its figures, and while
// a large image is copied `controld status` shows the copy progressing.
func TestMetricsAndProgress(t *testing.T) {
	s := newSite(t, env.root)
	name := unique("vm")
	disks := []testenv.DiskSpec{{Target: "vda", Path: s.images + "/" + name + "-vda.qcow2", SizeMiB: 1024}}
	spec := testenv.VMSpec{Name: name, MemoryMiB: 64, Disks: disks, Running: false}
	if err := testenv.DefineVM(env.lv.URI, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testenv.RemoveVM(env.lv.URI, name) })
	// 600 MiB of data, so that the copy takes a while.
	if out, err := runCmd("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 600M", disks[0].Path); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	s.addEntries(name, disks, s.config())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nreg, creg := prometheus.NewRegistry(), prometheus.NewRegistry()
	nm := metrics.NewNode(nreg)
	agent := node.New(node.Options{Node: s.host, Store: newStore(t), Hypervisor: env.hv, Log: quietLog(t),
		OnStep: nm.Step, ProgressEvery: 20 * time.Millisecond, StateDir: t.TempDir()})
	var cm *metrics.Control
	ctl := control.New(control.Options{Store: newStore(t), Log: quietLog(t),
		OnWrite: func(w fsm.Write) { cm.Write(string(w.To), w.ReturnValue) }})
	cm = metrics.NewControl(creg, ctl.Cache(), s.store.Tree)
	naddr, caddr := freeAddr(t), freeAddr(t)
	go metrics.Serve(ctx, naddr, nreg, s.store.Ping, quietLog(t))
	go metrics.Serve(ctx, caddr, creg, s.store.Ping, quietLog(t))
	done := make(chan struct{}, 2)
	go func() { agent.Run(ctx); done <- struct{}{} }()
	go func() { ctl.Run(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()

	_, started := control.StartBackups(s.store, []string{name}, time.Now())
	if started[0].Err != nil {
		t.Fatal(started[0].Err)
	}
	var progress []string
	deadline := time.Now().Add(leafLimit)
	for time.Now().Before(deadline) {
		st, err := control.Status(s.store)
		if err != nil {
			t.Fatal(err)
		}
		var vs *control.VMStatus
		for i := range st {
			if st[i].VM == name {
				vs = &st[i]
			}
		}
		if vs != nil && len(vs.Running) > 0 && vs.Running[0].Progress != "" {
			if p := vs.Running[0].Progress; len(progress) == 0 || progress[len(progress)-1] != p {
				progress = append(progress, p)
			}
		}
		if vs != nil && vs.Last != nil && len(vs.Running) == 0 {
			if vs.Last.ReturnValue != 0 {
				t.Fatalf("backup failed: %+v", vs.Last)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The merge reports its progress too; the copy must show its own.
	var copying []string
	for _, p := range progress {
		if strings.HasPrefix(p, "retain") {
			copying = append(copying, p)
		}
	}
	if len(copying) < 2 {
		t.Fatalf("status never showed the copy progressing: %q", progress)
	}
	t.Logf("%d progress lines, from %q to %q", len(progress), progress[0], progress[len(progress)-1])

	nodeText := scrape(t, "http://"+naddr+"/metrics")
	for _, want := range []string{`stoney_node_step_seconds_count{mode="snapshot"} 1`, `stoney_node_step_seconds_count{mode="retain"} 1`} {
		if !strings.Contains(nodeText, want) {
			t.Errorf("node metrics lack %q", want)
		}
	}
	if !strings.Contains(nodeText, "stoney_node_copied_bytes_total 6.") {
		t.Errorf("node metrics do not count the ~600 MiB copied:\n%s", grepLines(nodeText, "copied"))
	}
	ctlText := scrape(t, "http://"+caddr+"/metrics")
	for _, want := range []string{`stoney_last_success_timestamp_seconds{vm="` + name + `"}`, `stoney_leaves{mode="finished"}`,
		`stoney_control_writes_total{mode="merge"}`, `stoney_last_backup_step_seconds{step="retain",vm="` + name + `"}`} {
		if !strings.Contains(ctlText, want) {
			t.Errorf("controld metrics lack %q", want)
		}
	}
	if h := scrape(t, "http://"+caddr+"/healthz"); !strings.Contains(h, "ok") {
		t.Errorf("healthz: %q", h)
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
