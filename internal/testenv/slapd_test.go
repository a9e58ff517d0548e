package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

func startSlapd(t *testing.T, opts SlapdOptions) *Slapd {
	t.Helper()
	opts.Dir = t.TempDir()
	s, err := StartSlapd(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("slapd log:\n%s", tail(s.LogPath, 4000))
		}
	})
	return s
}

func dial(t *testing.T, s *Slapd) *ldap.Conn {
	t.Helper()
	c, err := s.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readFixture(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func getEntry(t *testing.T, c *ldap.Conn, dn string) *ldap.Entry {
	t.Helper()
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"*"}, nil))
	if err != nil {
		t.Fatalf("read %s: %v", dn, err)
	}
	return res.Entries[0]
}

func TestStartSlapdNeedsDir(t *testing.T) {
	if _, err := StartSlapd(SlapdOptions{}); err == nil {
		t.Fatal("StartSlapd without Dir succeeded")
	}
}

// The design's LDIF examples apply to our schema with the real ldapmodify, and
// what they write reads back as the typed values.
func TestSlapdDesignSteps(t *testing.T) {
	s := startSlapd(t, SlapdOptions{NoSync: true})
	c := dial(t, s)

	// Our schema is loaded, next to the standard ones.
	res, err := c.Search(ldap.NewSearchRequest("cn=Subschema", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=subschema)", []string{"objectClasses"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	classes := strings.Join(res.Entries[0].GetAttributeValues("objectClasses"), "\n")
	for _, want := range []string{"'sstVirtualizationBackupObjectClass'", "'sstProvisioning'", "'sstVirtualMachines'", "'inetOrgPerson'", "'posixAccount'"} {
		if !strings.Contains(classes, want) {
			t.Errorf("subschema lacks %s", want)
		}
	}
	// The layout's containers exist.
	for _, dn := range append([]string{s.Base}, s.Tree.Containers()...) {
		getEntry(t, c, dn)
	}

	if err := c.Add(ldapschema.NewVMAddRequest(s.Tree, ldapschema.VM{Name: "kvm-005", Node: "node-01"})); err != nil {
		t.Fatal(err)
	}
	step00 := readFixture(t, "design-step00-config.ldif")
	// The design's own 0660 is refused by the INTEGER syntax.
	err = s.LDAPAdd(strings.Replace(step00, "Permission: 660", "Permission: 0660", 1))
	if err == nil || !strings.Contains(err.Error(), "invalid per syntax") {
		t.Fatalf("0660 was not refused as the schema says: %v", err)
	}
	if err := s.LDAPAdd(step00); err != nil {
		t.Fatal(err)
	}
	if err := s.LDAPAdd(readFixture(t, "design-step01-leaf.ldif")); err != nil {
		t.Fatal(err)
	}
	if err := s.LDAPModify(readFixture(t, "design-step02-03-modify.ldif")); err != nil {
		t.Fatal(err)
	}

	cfg, err := ldapschema.ParseBackupConfig(getEntry(t, c, s.Tree.VMBackup("kvm-005")))
	if err != nil {
		t.Fatal(err)
	}
	wantCfg := ldapschema.BackupConfig{
		DN:         s.Tree.VMBackup("kvm-005"),
		CronMinute: []string{"0"}, CronHour: []string{"3"}, CronDay: []string{"*"}, CronMonth: []string{"*"}, CronDayOfWeek: []string{"*"},
		CronActive: true,
		RootDir:    "/var/backup/virtualization", RetainDir: "/var/virtualization/retain", RAMDisk: "/mnt/ramdisk-test",
		Format: "qcow2", Owner: "root", Group: "vm-storage", Permission: 0o660,
		DirOwner: "root", DirGroup: "vm-storage", DirPermission: 0o770, Iterations: 1,
	}
	if !reflect.DeepEqual(cfg, wantCfg) {
		t.Errorf("config read back:\n%+v\nwant\n%+v", cfg, wantCfg)
	}
	leaf, err := ldapschema.ParseLeaf(s.Tree, getEntry(t, c, s.Tree.Leaf("kvm-005", "20121002T010000Z")))
	if err != nil {
		t.Fatal(err)
	}
	if leaf.VM != "kvm-005" || leaf.Mode != "snapshot" || !leaf.Pending() || leaf.Code() != ldapschema.RCSuccess {
		t.Errorf("leaf after step 03: %+v", leaf)
	}
	vm, err := ldapschema.ParseVM(s.Tree, getEntry(t, c, s.Tree.VM("kvm-005")))
	if err != nil || vm.Node != "node-01" || vm.StorageKind() != ldapschema.StoragePersistent {
		t.Errorf("VM read back: %+v, %v", vm, err)
	}

	// What the package writes loads too: disks and a pool configuration.
	for _, req := range []*ldap.AddRequest{
		ldapschema.NewDevicesAddRequest(s.Tree, "kvm-005"),
		ldapschema.NewDiskAddRequest(s.Tree, "kvm-005", ldapschema.Disk{SourceFile: "/var/virtualization/vm-persistent/p1/kvm-005.qcow2"}),
		poolAddRequest(s.Tree, "p1"),
		ldapschema.NewBackupConfigAddRequest(s.Tree.PoolBackup("p1"), ldapschema.BackupConfig{Exclude: true}),
		ldapschema.NewBackupConfigAddRequest(s.Tree.GlobalBackup(), ldapschema.BackupConfig{CronHour: []string{"1"}, CronActive: true}),
	} {
		if err := c.Add(req); err != nil {
			t.Fatalf("add %s: %v", req.DN, err)
		}
	}
	disk, err := ldapschema.ParseDisk(s.Tree, getEntry(t, c, s.Tree.Disk("kvm-005", "vda")))
	if pool, _ := disk.StoragePool(); err != nil || !disk.IsDisk() || pool != "p1" {
		t.Errorf("disk read back: %+v, %v", disk, err)
	}
	_, from, err := ldapschema.EffectiveConfig(nil, getEntry(t, c, s.Tree.PoolBackup("p1")), getEntry(t, c, s.Tree.GlobalBackup()))
	if err != nil || from != s.Tree.PoolBackup("p1") {
		t.Errorf("effective config from %q, %v", from, err)
	}
}

func poolAddRequest(tree ldapschema.Tree, pool string) *ldap.AddRequest {
	req := ldap.NewAddRequest(tree.Pool(pool), nil)
	req.Attribute(ldapschema.AttrObjectClass, []string{ldapschema.ClassTop, ldapschema.ClassPool})
	req.Attribute(ldapschema.AttrVirtualMachinePool, []string{pool})
	return req
}

// A modify that deletes the old mode and adds the new one is a compare-and-swap:
// of two writers that read the same mode, only the first succeeds.
func TestSlapdCompareAndSwap(t *testing.T) {
	s := startSlapd(t, SlapdOptions{NoSync: true})
	c := dial(t, s)
	for _, req := range []*ldap.AddRequest{
		ldapschema.NewVMAddRequest(s.Tree, ldapschema.VM{Name: "vm-1"}),
		ldap.NewAddRequest(s.Tree.VMBackup("vm-1"), nil),
		ldapschema.NewLeafAddRequest(s.Tree, "vm-1", "20240101T030000Z", "snapshot", fsm.Pending),
	} {
		if req.DN == s.Tree.VMBackup("vm-1") {
			req.Attribute("objectClass", []string{"top", "organizationalUnit"})
			req.Attribute("ou", []string{"backup"})
		}
		if err := c.Add(req); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(node string) error {
		m := ldap.NewModifyRequest(s.Tree.Leaf("vm-1", "20240101T030000Z"), nil)
		m.Delete(ldapschema.AttrMode, []string{"snapshot"})
		m.Add(ldapschema.AttrMode, []string{"snapshotting"})
		m.Replace(ldapschema.AttrExecutionTime, []string{"claimed-by: " + node})
		return c.Modify(m)
	}
	if err := claim("a"); err != nil {
		t.Fatalf("first writer: %v", err)
	}
	err := claim("b")
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchAttribute) {
		t.Fatalf("second writer: %v, want result code 16", err)
	}
	leaf, err := ldapschema.ParseLeaf(s.Tree, getEntry(t, c, s.Tree.Leaf("vm-1", "20240101T030000Z")))
	if err != nil || leaf.Mode != "snapshotting" || !reflect.DeepEqual(leaf.ExecutionTime, []string{"claimed-by: a"}) {
		t.Fatalf("after the race: %+v, %v", leaf, err)
	}
}

// Restart keeps data and the URL; Kill is a crash; SlapAdd loads offline, and
// searches are not cut at 500 entries; syncprov answers sync requests.
func TestSlapdLifecycleAndBulkLoad(t *testing.T) {
	s := startSlapd(t, SlapdOptions{})
	c, err := s.Dial()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Add(ldapschema.NewVMAddRequest(s.Tree, ldapschema.VM{Name: "before-restart"})); err != nil {
		t.Fatal(err)
	}
	c.Close()
	url := s.URL
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.URL != url || !s.Running() {
		t.Fatalf("after Restart: URL %s (was %s), running %v", s.URL, url, s.Running())
	}
	getEntry(t, dial(t, s), s.Tree.VM("before-restart"))
	// Over ldapi, the local user manages cn=config.
	cmd := exec.Command("ldapsearch", "-Q", "-LLL", "-Y", "EXTERNAL", "-H", s.LDAPIURL, "-b", "olcDatabase={1}mdb,cn=config", "-s", "base", "olcSizeLimit")
	cmd.Env = append(os.Environ(), "LDAPNOINIT=1")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "olcSizeLimit: unlimited") {
		t.Fatalf("cn=config over ldapi: %v\n%s", err, out)
	}

	if err := s.SlapAdd("dn: o=x\n"); err == nil {
		t.Fatal("SlapAdd while slapd runs must fail")
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Fatal("running after Kill")
	}
	if _, err := s.Dial(); err == nil {
		t.Fatal("Dial succeeded after Kill")
	}
	if err := s.Kill(); err != nil {
		t.Fatal("Kill of a stopped slapd must be a no-op")
	}
	// A slapd that cannot start (its port taken) is reported, not waited for.
	l, err := net.Listen("tcp", strings.TrimPrefix(s.URL, "ldap://"))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Restart()
	l.Close()
	if err == nil || s.Running() {
		t.Fatalf("Restart on a taken port: %v, running %v", err, s.Running())
	}

	const n = 600
	var entries []*ldap.Entry
	for i := 0; i < n; i++ {
		entries = append(entries, ldapschema.EntryOf(ldapschema.NewVMAddRequest(s.Tree, ldapschema.VM{Name: fmt.Sprintf("vm-%04d", i), Node: "node-01"})))
	}
	if err := s.SlapAdd(ldapschema.FormatLDIF(entries)); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	c = dial(t, s)
	res, err := c.Search(ldap.NewSearchRequest(s.Tree.VirtualMachines(), ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(&(objectClass=sstVirtualizationVirtualMachine)(sstNode=node-01))", []string{ldapschema.AttrNode}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != n {
		t.Fatalf("found %d VMs on node-01, want %d", len(res.Entries), n)
	}

	// Without the syncprov overlay a sync request fails with result code 12.
	req := ldap.NewSearchRequest(s.Tree.VirtualMachines(), ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=sstVirtualizationVirtualMachine)", []string{ldapschema.AttrVirtualMachine}, nil)
	resp := c.Syncrepl(context.Background(), req, 64, ldap.SyncRequestModeRefreshOnly, nil, false)
	synced := 0
	for resp.Next() {
		if resp.Entry() != nil {
			synced++
		}
	}
	if err := resp.Err(); err != nil {
		t.Fatalf("sync request: %v", err)
	}
	if synced != n+1 {
		t.Fatalf("sync refresh sent %d VMs, want %d", synced, n+1)
	}
}

// LDIF written by ldapschema.FormatLDIF is what ldapadd reads, and what
// ldapsearch prints is what ldapschema.ParseLDIF reads.
func TestSlapdLDIFWithRealTools(t *testing.T) {
	s := startSlapd(t, SlapdOptions{NoSync: true})
	values := []string{
		"plain", " leading space", "trailing space ", ":colon", "<angle", "Grüezi mitenand",
		"two\nlines", strings.Repeat("long ", 40), "#hash",
	}
	var entries []*ldap.Entry
	for i, v := range values {
		dn := fmt.Sprintf("ou=%s,%s", ldap.EscapeDN(fmt.Sprintf("e%d %s", i, strings.TrimSpace(strings.ReplaceAll(v, "\n", " ")))), s.Tree.Configuration())
		entries = append(entries, ldap.NewEntry(dn, map[string][]string{
			"objectClass": {"top", "organizationalUnit"},
			"ou":          {firstRDNValue(dn)},
			"description": {v, "second " + v},
		}))
	}
	if err := s.LDAPAdd(ldapschema.FormatLDIF(entries)); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ldapsearch", "-x", "-LLL", "-H", s.URL, "-D", s.AdminDN, "-y", s.pwFile,
		"-b", s.Tree.Configuration(), "-s", "one", "(objectClass=organizationalUnit)", "ou", "description")
	cmd.Env = append(os.Environ(), "LDAPNOINIT=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ldapsearch: %v", err)
	}
	got, err := ldapschema.ParseLDIF(string(out))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got) != len(entries) {
		t.Fatalf("ldapsearch returned %d entries, want %d:\n%s", len(got), len(entries), out)
	}
	// slapd may escape DNs differently ("\<" or "\3C"): compare them parsed.
	norm := func(dn string) string {
		parsed, err := ldap.ParseDN(dn)
		if err != nil {
			t.Fatalf("DN %q: %v", dn, err)
		}
		return strings.ToLower(parsed.String())
	}
	byDN := map[string]*ldap.Entry{}
	for _, e := range got {
		byDN[norm(e.DN)] = e
	}
	for _, want := range entries {
		g := byDN[norm(want.DN)]
		if g == nil {
			t.Errorf("%q not found in:\n%s", want.DN, out)
			continue
		}
		for _, attr := range []string{"ou", "description"} {
			if !reflect.DeepEqual(g.GetEqualFoldAttributeValues(attr), want.GetAttributeValues(attr)) {
				t.Errorf("%s %s: got %q, want %q", want.DN, attr, g.GetEqualFoldAttributeValues(attr), want.GetAttributeValues(attr))
			}
		}
	}
}

// A deep Dir would overflow the socket path limit: the socket goes to a short
// temporary directory, removed on Stop.
func TestSlapdDeepDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 90))
	s, err := StartSlapd(SlapdOptions{Dir: dir, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.sockDir == "" || strings.Contains(s.LDAPIURL, "ddddd") {
		t.Errorf("socket in %q (%s)", s.sockDir, s.LDAPIURL)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.sockDir); !os.IsNotExist(err) {
		t.Errorf("socket directory left behind: %v", err)
	}
}
