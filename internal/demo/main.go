// Command demo backs up three tiny VMs with the real daemons on a private slapd
// and a private libvirtd: two running VMs (one with two disks) and a shut-off
// one, as one batch. It prints each leaf's mode changes as they happen, then
// checks the result the way the tests do: files present, backed-up images equal
// to the disks as they were, guests reading their data, the shut-off VM still off.
// Then it shows `controld status` and the metrics, lets one VM write new data,
// and restores it with `controld restore`: the guest reads its old data again.
//
// The web UI (`controld web`) runs alongside; its address is printed at the
// end. With -stay (make demo STAY=1) everything stays up after the checks,
// to click through, until interrupted.
//
// Run it through `make demo` (which builds bin/controld and bin/nodebackupd).
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding controld and nodebackupd")
	keep := flag.Bool("keep", false, "keep the work directory (printed at the start)")
	flag.BoolVar(&stay, "stay", false, "after the checks, keep the directory, VMs and web UI up until interrupted")
	flag.Parse()
	if err := run(*bin, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
	fmt.Println("\ndemo passed: every check above holds")
}

var stay bool

type demoVM struct {
	name    string
	running bool
	disks   []testenv.DiskSpec
	spec    testenv.VMSpec
}

func run(bin string, keep bool) error {
	bin, _ = filepath.Abs(bin)
	root, err := os.MkdirTemp("", "stoney-demo-")
	if err != nil {
		return err
	}
	fmt.Println("work directory:", root)
	if !keep {
		defer os.RemoveAll(root)
	}
	step := func(format string, a ...any) { fmt.Printf("\n== "+format+"\n", a...) }

	step("starting a private slapd and a private libvirtd")
	slapd, err := testenv.StartSlapd(testenv.SlapdOptions{Dir: filepath.Join(root, "slapd")})
	if err != nil {
		return err
	}
	defer slapd.Stop()
	lv, err := testenv.StartLibvirtd(testenv.LibvirtdOptions{Dir: filepath.Join(root, "libvirt")})
	if err != nil {
		return err
	}
	defer lv.Stop()
	fmt.Println("slapd:", slapd.URL, " libvirt:", lv.URI)

	images := filepath.Join(root, "var", "virtualization", "vm-persistent", "pool-demo")
	retain := filepath.Join(root, "var", "virtualization", "retain")
	backup := filepath.Join(root, "var", "backup", "virtualization")
	ramdisk := filepath.Join(root, "ramdisk")
	for _, d := range []string{images, retain, backup, ramdisk} {
		if err := os.MkdirAll(d, 0o770); err != nil {
			return err
		}
	}
	store, err := ldapschema.Dial(ldapschema.StoreOptions{URL: slapd.URL, BindDN: slapd.AdminDN, Password: slapd.AdminPassword, Base: slapd.Base})
	if err != nil {
		return err
	}
	defer store.Close()

	step("the global backup configuration, as an operator writes it")
	cfg := testenv.LocalConfig(backup, retain, ramdisk)
	if err := store.Add(ldapschema.NewBackupConfigAddRequest(store.Tree.GlobalBackup(), cfg)); err != nil {
		return err
	}
	fmt.Println(store.Tree.GlobalBackup())

	step("three tiny VMs on host demo-node")
	vms := []*demoVM{
		{name: "demo-web", running: true, disks: []testenv.DiskSpec{{Target: "vda", SizeMiB: 64, Pattern: 0xab}}},
		{name: "demo-db", running: true, disks: []testenv.DiskSpec{{Target: "vda", SizeMiB: 64, Pattern: 0xcd}, {Target: "vdb", SizeMiB: 32, Pattern: 0xce}}},
		{name: "demo-idle", running: false, disks: []testenv.DiskSpec{{Target: "vda", SizeMiB: 64, Pattern: 0xef}}},
	}
	before := filepath.Join(root, "before")
	os.MkdirAll(before, 0o700)
	for _, v := range vms {
		for i := range v.disks {
			v.disks[i].Path = filepath.Join(images, fmt.Sprintf("%s-%s.qcow2", v.name, v.disks[i].Target))
		}
		v.spec = testenv.VMSpec{Name: v.name, MemoryMiB: 64, Disks: v.disks, Running: v.running}
		if err := testenv.DefineVM(lv.URI, v.spec); err != nil {
			return err
		}
		if err := testenv.VMEntries(store, "demo-node", "vmpool-demo", v.name, v.disks, nil); err != nil {
			return err
		}
		state := "shut off"
		if v.running {
			state = "running"
		}
		fmt.Printf("%-10s %-8s %d disk(s)\n", v.name, state, len(v.disks))
	}
	for _, v := range vms {
		if v.running {
			if err := testenv.WaitGuestFilled(v.spec, 2*time.Minute); err != nil {
				return err
			}
		}
		for _, d := range v.disks {
			if out, err := exec.Command("qemu-img", "convert", "-U", "-f", "qcow2", "-O", "qcow2", d.Path, filepath.Join(before, filepath.Base(d.Path))).CombinedOutput(); err != nil {
				return fmt.Errorf("copy %s: %v: %s", d.Path, err, out)
			}
		}
	}

	step("starting controld and nodebackupd")
	pw := filepath.Join(root, "ldap.secret")
	if err := os.WriteFile(pw, []byte(slapd.AdminPassword+"\n"), 0o600); err != nil {
		return err
	}
	ldapCfg := fmt.Sprintf("ldap:\n  url: %s\n  bindDN: %q\n  passwordFile: %s\n  base: %q\n", slapd.URL, slapd.AdminDN, pw, slapd.Base)
	ctlCfg := filepath.Join(root, "controld.yaml")
	nodeCfg := filepath.Join(root, "nodebackupd.yaml")
	var addrs [3]string
	for i := range addrs {
		a, err := testenv.FreeAddr()
		if err != nil {
			return err
		}
		addrs[i] = a
	}
	ctlMetrics, nodeMetrics, webAddr := addrs[0], addrs[1], addrs[2]
	if err := os.WriteFile(ctlCfg, []byte(ldapCfg+"metrics:\n  listen: "+ctlMetrics+"\nweb:\n  listen: "+webAddr+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(nodeCfg, []byte(ldapCfg+"node: demo-node\nstateDir: "+filepath.Join(root, "node-state")+"\nlibvirt:\n  uri: "+lv.URI+"\nmetrics:\n  listen: "+nodeMetrics+"\n"), 0o600); err != nil {
		return err
	}
	logs := filepath.Join(root, "logs")
	os.MkdirAll(logs, 0o700)
	stopCtl, err := daemon(filepath.Join(bin, "controld"), filepath.Join(logs, "controld.log"), "agent", "-config", ctlCfg)
	if err != nil {
		return err
	}
	defer stopCtl()
	stopNode, err := daemon(filepath.Join(bin, "nodebackupd"), filepath.Join(logs, "nodebackupd.log"), "-config", nodeCfg)
	if err != nil {
		return err
	}
	defer stopNode()
	stopWeb, err := daemon(filepath.Join(bin, "controld"), filepath.Join(logs, "web.log"), "web", "-config", ctlCfg)
	if err != nil {
		return err
	}
	defer stopWeb()
	fmt.Println("logs in", logs)

	step("controld backup demo-web demo-db demo-idle (one batch)")
	cmd := exec.Command(filepath.Join(bin, "controld"), "backup", "-config", ctlCfg, "-timeout", "10m", "demo-web", "demo-db", "demo-idle")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("controld backup: %w", err)
	}

	step("checking the result")
	hv, err := libvirt.Open(lv.URI)
	if err != nil {
		return err
	}
	defer hv.Close()
	leaves, err := store.Search(store.Tree.VirtualMachines(), 2, "(objectClass=sstProvisioning)", []string{"*"})
	if err != nil {
		return err
	}
	for _, e := range leaves {
		l, err := ldapschema.ParseLeaf(store.Tree, e)
		if err != nil {
			return err
		}
		if l.Mode != "finished" || l.ReturnValue != 0 {
			return fmt.Errorf("%s: mode %s, return value %d", l.VM, l.Mode, l.ReturnValue)
		}
		fmt.Printf("%-10s leaf %s finished rv=0  %s\n", l.VM, l.Name, strings.Join(l.ExecutionTime, ", "))
		v := find(vms, l.VM)
		dir := filepath.Join(backup, "vm-persistent", "pool-demo", v.name, l.Name)
		for _, f := range []string{".state.", ".xml.", ".ldif."} {
			if _, err := os.Stat(filepath.Join(dir, v.name+f+l.Name)); err != nil {
				return err
			}
		}
		for _, d := range v.disks {
			img := filepath.Join(dir, filepath.Base(d.Path)+"."+l.Name)
			eq, err := format.CompareImages(context.Background(), filepath.Join(before, filepath.Base(d.Path)), img)
			if err != nil || !eq {
				return fmt.Errorf("%s differs from the disk as it was (%v)", img, err)
			}
			info, err := format.ImageInfo(context.Background(), d.Path)
			if err != nil {
				return err
			}
			if info.BackingFile != "" {
				return fmt.Errorf("%s still depends on %s", d.Path, info.BackingFile)
			}
			fmt.Printf("  %-4s backup equals the disk as it was; live image stands alone\n", d.Target)
		}
		info, err := hv.Domain(v.name)
		if err != nil {
			return err
		}
		if info.Running != v.running {
			return fmt.Errorf("%s: running=%v, want %v", v.name, info.Running, v.running)
		}
		if v.running {
			for _, d := range v.disks {
				if err := testenv.VerifyGuestPattern(lv.URI, lv.LogDir, v.name, d.Target, d.Pattern, testenv.PatternOffset, testenv.PatternLength); err != nil {
					return fmt.Errorf("%s %s: %w", v.name, d.Target, err)
				}
				fmt.Printf("  %-4s the running guest reads its data (0x%02x)\n", d.Target, d.Pattern)
			}
		} else {
			fmt.Println("  still shut off")
		}
	}
	if len(leaves) != len(vms) {
		return fmt.Errorf("%d leaves, want %d", len(leaves), len(vms))
	}
	var tree bytes.Buffer
	filepath.Walk(backup, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(backup, p)
			fmt.Fprintf(&tree, "  %10d  %s\n", fi.Size(), rel)
		}
		return nil
	})
	step("the backup directory")
	fmt.Print(tree.String())

	step("controld status")
	if err := runCLI(bin, "status", "-config", ctlCfg); err != nil {
		return err
	}

	step("metrics")
	for _, ep := range []struct{ who, addr string }{{"controld", ctlMetrics}, {"nodebackupd", nodeMetrics}} {
		text, err := testenv.HTTPGet("http://" + ep.addr + "/metrics")
		if err != nil {
			return fmt.Errorf("%s metrics: %w", ep.who, err)
		}
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, "stoney_last_success_timestamp_seconds") || strings.HasPrefix(line, "stoney_node_downtime_seconds_count") ||
				strings.HasPrefix(line, "stoney_node_copied_bytes_total") || strings.HasPrefix(line, "stoney_leaves{") {
				fmt.Printf("%-12s %s\n", ep.who, line)
			}
		}
	}

	web := vms[0]
	step("restore: demo-web writes new data, then comes back from its backup")
	if err := testenv.WriteGuestPattern(lv.URI, lv.LogDir, web.name, "vda", 0x99, testenv.PatternOffset, testenv.PatternLength); err != nil {
		return err
	}
	if err := testenv.VerifyGuestPattern(lv.URI, lv.LogDir, web.name, "vda", 0x99, testenv.PatternOffset, testenv.PatternLength); err != nil {
		return err
	}
	fmt.Println("demo-web's guest now reads 0x99 where its backup holds 0xab")
	boots := bootCount(web.spec)
	var webLeaf string
	for _, e := range leaves {
		if l, _ := ldapschema.ParseLeaf(store.Tree, e); l.VM == web.name {
			webLeaf = l.Name
		}
	}
	if err := runCLI(bin, "restore", "-config", ctlCfg, "-yes", "-timeout", "10m", web.name, webLeaf); err != nil {
		return err
	}
	if err := testenv.VerifyGuestPattern(lv.URI, lv.LogDir, web.name, "vda", 0xab, testenv.PatternOffset, testenv.PatternLength); err != nil {
		return fmt.Errorf("after the restore: %w", err)
	}
	if bootCount(web.spec) != boots {
		return fmt.Errorf("demo-web rebooted: its RAM state was not resumed")
	}
	fmt.Println("demo-web's guest reads 0xab again, and resumed from its saved RAM state (no reboot)")

	step("the web UI")
	if _, err := testenv.HTTPGet("http://" + webAddr + "/login"); err != nil {
		return fmt.Errorf("web UI: %w", err)
	}
	fmt.Printf("http://%s/  log in as %s with password %s\n", webAddr, slapd.AdminDN, slapd.AdminPassword)
	if stay {
		fmt.Println("staying up until interrupted (Ctrl-C)")
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
	} else {
		fmt.Println("(make demo STAY=1 keeps it up to click through)")
	}
	return nil
}

func runCLI(bin string, args ...string) error {
	cmd := exec.Command(filepath.Join(bin, "controld"), args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("controld %s: %w", args[0], err)
	}
	return nil
}

func bootCount(spec testenv.VMSpec) int {
	b, _ := os.ReadFile(spec.SerialPath())
	return bytes.Count(b, []byte("FILLED"))
}

func find(vms []*demoVM, name string) *demoVM {
	for _, v := range vms {
		if v.name == name {
			return v
		}
	}
	return &demoVM{name: name}
}

// daemon starts a child process logging to a file; the returned func stops it.
func daemon(path, log string, args ...string) (func(), error) {
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	return func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		f.Close()
	}, nil
}
