package web_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/controld/web"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
	"github.com/stoneycloud/stoney-conductor/nodebackupd/node"
)

// chromium is Debian's browser, which deploy/install-deps.sh installs; the
// tests drive it over the DevTools protocol, no driver in between.
const chromium = "/usr/bin/chromium"

// The people of the test directory. operator is in the group the access
// rules of deploy/ldap/stoney-conductor-webui-acl.ldif let write leaves;
// viewer is not, and may only read.
const (
	host      = "web-node"
	operator  = "operator"
	viewer    = "viewer"
	password  = "correct horse battery staple"
	opsGroup  = "cn=backup-operators,ou=groups,"
	peopleOU  = "ou=people,"
	vmBusy    = "web-busy" // running: backed up, restored, cancelled through the page
	vmIdle    = "web-idle" // shut off: what the read-only user and the CSRF checks try
	vmOld     = "web-old"  // directory only: a good backup 3 days old, a failed one since
	vmPattern = 0xab
)

// One slapd, one libvirtd, one controld, one nodebackupd, one web UI and one
// browser for the package: each costs seconds to start.
var env struct {
	root    string
	slapd   *testenv.Slapd
	lv      *testenv.Libvirtd
	admin   *ldapschema.Store
	url     string // the web UI
	browser context.Context
	busy    testenv.VMSpec
	leaf    string // the backup made at set-up, of both VMs
}

func TestMain(m *testing.M) {
	testenv.Main(m, "stoney-web-", func(sh *testenv.Shared) error {
		// A missing browser fails the package: these tests are the web UI's only check.
		if _, err := os.Stat(chromium); err != nil {
			return fmt.Errorf("web tests need Debian's chromium at %s (deploy/install-deps.sh installs it): %v", chromium, err)
		}
		if err := setUp(sh); err != nil {
			return fmt.Errorf("web test set-up: %w", err)
		}
		return nil
	})
}

func setUp(sh *testenv.Shared) (err error) {
	env.root = sh.Root
	if env.slapd, err = sh.StartSlapd(testenv.SlapdOptions{}); err != nil {
		return err
	}
	if env.lv, err = sh.StartLibvirtd(testenv.LibvirtdOptions{}); err != nil {
		return err
	}
	hv, err := libvirt.Open(env.lv.URI)
	if err != nil {
		return err
	}
	sh.Cleanup(func() { hv.Close() })
	if env.admin, err = ldapschema.Dial(env.slapd.AdminOptions()); err != nil {
		return err
	}
	sh.Cleanup(func() { env.admin.Close() })
	if err := addPeople(); err != nil {
		return err
	}
	if err := addVMs(sh); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	sh.Cleanup(cancel)
	log := logrus.New()
	log.SetOutput(io.Discard)
	if f, err := os.Create(filepath.Join(env.root, "daemons.log")); err == nil {
		log.SetOutput(f)
	}
	ctl := control.New(control.Options{Store: env.admin, Log: log.WithField("side", "control")})
	done := make(chan struct{}, 3)
	go func() { ctl.Run(ctx); done <- struct{}{} }()
	agent := node.New(node.Options{Node: host, Store: env.admin, Hypervisor: hv, Log: log.WithField("side", "node"),
		StateDir: filepath.Join(env.root, "node-state"), ProgressEvery: 100 * time.Millisecond})
	go func() { agent.Run(ctx); done <- struct{}{} }()
	sh.Cleanup(func() { cancel(); <-done; <-done })

	// Both VMs have a backup before any page is shown: the overview's last result.
	if err := testenv.WaitGuestFilled(env.busy, 2*time.Minute); err != nil {
		return err
	}
	name, started := control.StartBackups(env.admin, []string{vmBusy, vmIdle}, time.Now().Add(-time.Hour))
	for _, s := range started {
		if s.Err != nil {
			return s.Err
		}
		if err := waitMode(s.DN, "finished", 4*time.Minute); err != nil {
			return err
		}
	}
	env.leaf = name

	srv, err := web.New(web.Options{
		Config: web.Config{Listen: "127.0.0.1:0", UserDN: "uid=%s," + peopleOU + env.slapd.Base},
		LDAP:   ldapschema.StoreOptions{URL: env.slapd.URL, Base: env.slapd.Base},
		Log:    log.WithField("side", "web"),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	env.url = "http://" + ln.Addr().String()
	go func() { srv.ServeListener(ctx, ln); done <- struct{}{} }()
	sh.Cleanup(func() { cancel(); <-done })

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1280, 860))...)
	sh.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	sh.Cleanup(cancelBrowser)
	if err := chromedp.Do(browser); err != nil { // starts the browser
		return fmt.Errorf("chromium: %w", err)
	}
	env.browser = browser
	return nil
}

// addPeople writes the accounts, the operators' group and the web UI's access
// rules as docs/web-ui.md says.
func addPeople() error {
	base := env.slapd.Base
	ldif := fmt.Sprintf(`dn: %[1]s%[2]s
objectClass: organizationalUnit
ou: people

dn: ou=groups,%[2]s
objectClass: organizationalUnit
ou: groups

dn: uid=%[3]s,%[1]s%[2]s
objectClass: inetOrgPerson
uid: %[3]s
cn: Olivia Operator
sn: Operator
userPassword: %[5]s

dn: uid=%[4]s,%[1]s%[2]s
objectClass: inetOrgPerson
uid: %[4]s
cn: Victor Viewer
sn: Viewer
userPassword: %[5]s

dn: %[6]s%[2]s
objectClass: groupOfNames
cn: backup-operators
member: uid=%[3]s,%[1]s%[2]s
`, peopleOU, base, operator, viewer, password, opsGroup)
	if err := env.slapd.LDAPAdd(ldif); err != nil {
		return err
	}
	rules, err := os.ReadFile("../../deploy/ldap/stoney-conductor-webui-acl.ldif")
	if err != nil {
		return err
	}
	// The test database has no rules of its own: everyone reads (the
	// frontend's rule), only the root DN writes, unless a rule grants more.
	return env.slapd.ModifyConfig(string(rules))
}

// addVMs defines the two VMs on host with their directory entries and a
// backup configuration of their own.
func addVMs(sh *testenv.Shared) error {
	dir := filepath.Join(env.root, "site")
	images := filepath.Join(dir, "images", "pool-a")
	retain, backup, ramdisk := filepath.Join(dir, "retain"), filepath.Join(dir, "backup"), filepath.Join(dir, "ramdisk")
	for _, d := range []string{images, retain, backup, ramdisk} {
		if err := os.MkdirAll(d, 0o770); err != nil {
			return err
		}
	}
	cfg := testenv.LocalConfig(backup, retain, ramdisk)
	cfg.CronActive = true // daily at 03:00; nobody runs the scheduler here
	for _, v := range []struct {
		name    string
		running bool
	}{{vmBusy, true}, {vmIdle, false}} {
		disks := []testenv.DiskSpec{{Target: "vda", Path: filepath.Join(images, v.name+"-vda.qcow2"), SizeMiB: 64, Pattern: vmPattern}}
		spec := testenv.VMSpec{Name: v.name, MemoryMiB: 64, Disks: disks, Running: v.running}
		if err := testenv.DefineVM(env.lv.URI, spec); err != nil {
			return err
		}
		sh.Cleanup(func() { testenv.RemoveVM(env.lv.URI, v.name) })
		if err := testenv.VMEntries(env.admin, host, "vmpool-1", v.name, disks, &cfg); err != nil {
			return err
		}
		if v.running {
			env.busy = spec
		}
	}
	// A VM whose last good backup is older than its schedule allows, and
	// whose last run failed: what the overview marks.
	if err := testenv.VMEntries(env.admin, host, "vmpool-2", vmOld, nil, &cfg); err != nil {
		return err
	}
	for _, l := range []struct {
		age time.Duration
		rc  string
	}{{72 * time.Hour, "0"}, {26 * time.Hour, fmt.Sprint(int(ldapschema.RCNoSpace))}} {
		name := fsm.FormatTime(time.Now().Add(-l.age))
		if err := env.admin.Add(ldapschema.NewLeafAddRequest(env.admin.Tree, vmOld, name, "finished", name)); err != nil {
			return err
		}
		if err := env.admin.Update(env.admin.Tree.Leaf(vmOld, name), "", map[string][]string{ldapschema.AttrReturnValue: {l.rc}}); err != nil {
			return err
		}
	}
	return nil
}

// waitMode polls a leaf until it is in mode; the limit guards against a hang.
func waitMode(dn, mode string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		if e, err := env.admin.Get(dn, ldapschema.AttrMode); err == nil {
			if last = e.GetAttributeValue(ldapschema.AttrMode); last == mode {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: not %s within %v (last %q)", dn, mode, limit, last)
}

// get is a plain HTTP GET against the web UI (for the checks without a browser).
func get(c *http.Client, path string) (*http.Response, string, error) {
	resp, err := c.Get(env.url + path)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}
