package ldap_test

import (
	"strings"
	"testing"
	"time"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

const leafName = "20121002T010000Z"

func intp(i int) *int { return &i }

// The node claims a request on its own VM's leaf and answers it the way
// nodebackupd does: one compare-and-swap each, the answer with State, return
// value and execution times in the same modify.
func TestNodeWritesItsOwnLeaves(t *testing.T) {
	vm := addVM(t, node1, true)
	leaf := addLeaf(t, vm, leafName, "snapshot")
	st := bind(t, nodeDN(node1))

	allowed(t, "claim", st.ChangeMode(ldapschema.ModeChange{DN: leaf, From: "snapshot", To: "snapshotting", FromState: "0"}))
	allowed(t, "answer", st.ChangeMode(ldapschema.ModeChange{
		DN: leaf, From: "snapshotting", To: "snapshotted", State: "20121002T010011Z",
		ReturnValue: intp(0), ExecutionTime: []string{"snapshot: 1.2", "downtime: 0.8"},
	}))
	allowed(t, "description and execution date", st.Update(leaf, "", map[string][]string{
		ldapschema.AttrDescription: {"restore: 2 differences"}, ldapschema.AttrExecutionDate: {"0"},
	}))
	if got := attr(t, leaf, ldapschema.AttrMode); got != "snapshotted" {
		t.Errorf("mode is %q, want snapshotted", got)
	}
}

func TestNodeCannotWriteOtherHostsLeaves(t *testing.T) {
	vm := addVM(t, node2, true)
	leaf := addLeaf(t, vm, leafName, "snapshot")
	st := bind(t, nodeDN(node1))

	refused(t, "claim of kvm-02's leaf", st.ChangeMode(ldapschema.ModeChange{DN: leaf, From: "snapshot", To: "snapshotting", FromState: "0"}))
	refused(t, "return value of kvm-02's leaf", st.Update(leaf, "", map[string][]string{ldapschema.AttrReturnValue: {"1"}}))
	if got := attr(t, leaf, ldapschema.AttrMode); got != "snapshot" {
		t.Errorf("mode is %q, want snapshot unchanged", got)
	}
	// kvm-02 itself may.
	allowed(t, "kvm-02 claims", bind(t, nodeDN(node2)).ChangeMode(ldapschema.ModeChange{DN: leaf, From: "snapshot", To: "snapshotting", FromState: "0"}))
}

// A node may change no VM data of VMs it does not run.
func TestNodeCannotChangeOtherHostsVMs(t *testing.T) {
	vm := addVM(t, node2, true)
	st := bind(t, nodeDN(node1))
	tree := env.tree

	refused(t, "sstNode of kvm-02's VM", st.Update(tree.VM(vm), "", map[string][]string{ldapschema.AttrNode: {node1}}))
	refused(t, "sstMemory of kvm-02's VM", st.Update(tree.VM(vm), "", map[string][]string{ldapschema.AttrMemory: {"1"}}))
	refused(t, "disk of kvm-02's VM", st.Update(tree.Disk(vm, "vda"), "", map[string][]string{ldapschema.AttrSourceFile: {"/tmp/x.qcow2"}}))
	refused(t, "add disk to kvm-02's VM", st.Add(ldapschema.NewDiskAddRequest(tree, vm, ldapschema.Disk{Target: "vdb", SourceFile: "/tmp/y.qcow2"})))
	refused(t, "delete disk of kvm-02's VM", st.Delete(tree.Disk(vm, "vda")))
	if got := attr(t, tree.VM(vm), ldapschema.AttrNode); got != node2 {
		t.Errorf("sstNode is %q, want %s", got, node2)
	}
}

// A restore writes back the VM's entry and disks, but never moves the VM.
func TestNodeWritesBackItsOwnVM(t *testing.T) {
	vm := addVM(t, node1, true)
	st := bind(t, nodeDN(node1))
	tree := env.tree

	allowed(t, "sstMemory", st.Update(tree.VM(vm), "", map[string][]string{ldapschema.AttrMemory: {"134217728"}, ldapschema.AttrVCPU: {"2"}}))
	allowed(t, "disk attribute", st.Update(tree.Disk(vm, "vda"), "", map[string][]string{"sstDriverCache": {"none"}}))
	allowed(t, "add a disk", st.Add(ldapschema.NewDiskAddRequest(tree, vm, ldapschema.Disk{Target: "vdb", SourceFile: "/var/virtualization/vm-persistent/pool-a/" + vm + "-vdb.qcow2"})))
	allowed(t, "delete a disk", st.Delete(tree.Disk(vm, "vdb")))
	refused(t, "sstNode of its own VM", st.Update(tree.VM(vm), "", map[string][]string{ldapschema.AttrNode: {node2}}))
	refused(t, "add a VM", st.Add(ldapschema.NewVMAddRequest(tree, ldapschema.VM{Name: vmName("new"), Node: node1})))
}

// Leaves and backup configurations are controld's and the operators'.
func TestNodeCannotAddOrDeleteLeavesOrChangeConfig(t *testing.T) {
	vm := addVM(t, node1, true)
	leaf := addLeaf(t, vm, leafName, "finished")
	st := bind(t, nodeDN(node1))
	tree := env.tree

	refused(t, "add a leaf", st.Add(ldapschema.NewLeafAddRequest(tree, vm, "20121003T010000Z", "initialize", "20121003T010000Z")))
	refused(t, "delete a leaf", st.Delete(leaf))
	refused(t, "leaf objectClass", st.Update(leaf, "", map[string][]string{ldapschema.AttrObjectClass: {"top", "organizationalUnit"}}))
	refused(t, "backup configuration", st.Update(tree.VMBackup(vm), "", map[string][]string{ldapschema.AttrBackupNumberOfIterations: {"5"}}))
	refused(t, "delete ou=backup", st.Delete(tree.VMBackup(vm)))
}

// controld starts backups (ou=backup container and leaf), advances any
// host's leaves, and removes leaves and containers.
func TestControldManagesLeaves(t *testing.T) {
	vm := addVM(t, node1, false) // no ou=backup yet: the config comes from elsewhere
	other := addVM(t, node2, true)
	otherLeaf := addLeaf(t, other, leafName, "snapshotted")
	st := bind(t, controldDN)

	name, started := control.StartBackups(st, []string{vm}, time.Date(2012, 10, 2, 1, 0, 0, 0, time.UTC))
	if started[0].Err != nil {
		t.Fatalf("start backup: %v", started[0].Err)
	}
	leaf := started[0].DN
	if got := attr(t, leaf, ldapschema.AttrMode); got != "initialize" || name != leafName {
		t.Errorf("leaf %s in mode %q, want %s in initialize", leaf, got, leafName)
	}
	allowed(t, "initialized", st.ChangeMode(ldapschema.ModeChange{DN: leaf, From: "initialize", To: "initialized", State: "20121002T010001Z"}))
	allowed(t, "merge on kvm-02's leaf", st.ChangeMode(ldapschema.ModeChange{DN: otherLeaf, From: "snapshotted", To: "merge", State: "0"}))
	allowed(t, "remove the leaf", st.DeleteIf(leaf, "(sstProvisioningMode=initialized)"))
	allowed(t, "remove ou=backup", st.Delete(env.tree.VMBackup(vm)))
	if _, err := admin(t).Get(env.tree.VMBackup(vm)); err == nil {
		t.Error("ou=backup still there")
	}
}

// controld changes no VM data, no configuration, and nothing outside leaves.
func TestControldChangesNothingElse(t *testing.T) {
	vm := addVM(t, node1, true)
	leaf := addLeaf(t, vm, leafName, "finished")
	st := bind(t, controldDN)
	tree := env.tree

	refused(t, "sstMemory", st.Update(tree.VM(vm), "", map[string][]string{ldapschema.AttrMemory: {"1"}}))
	refused(t, "sstNode", st.Update(tree.VM(vm), "", map[string][]string{ldapschema.AttrNode: {node2}}))
	refused(t, "disk", st.Update(tree.Disk(vm, "vda"), "", map[string][]string{ldapschema.AttrSourceFile: {"/tmp/x.qcow2"}}))
	refused(t, "add a disk", st.Add(ldapschema.NewDiskAddRequest(tree, vm, ldapschema.Disk{Target: "vdb", SourceFile: "/tmp/y.qcow2"})))
	refused(t, "add a VM", st.Add(ldapschema.NewVMAddRequest(tree, ldapschema.VM{Name: vmName("new"), Node: node1})))
	refused(t, "backup configuration", st.Update(tree.VMBackup(vm), "", map[string][]string{ldapschema.AttrBackupNumberOfIterations: {"5"}}))
	refused(t, "global configuration", st.Add(ldapschema.NewBackupConfigAddRequest(tree.GlobalBackup(), ldapschema.BackupConfig{Iterations: 1})))
	refused(t, "leaf objectClass", st.Update(leaf, "", map[string][]string{ldapschema.AttrObjectClass: {"top", "organizationalUnit", "sstProvisioning", "sstCronObjectClass"}}))
	refused(t, "a node's password", st.Update(nodeDN(node1), "", map[string][]string{"userPassword": {"x"}}))
}

// Each node renews only its own host's heartbeat, and only controld holds
// the controld lease; whoever comes first creates the containers.
func TestLeases(t *testing.T) {
	tree := env.tree
	n1, n2, ctl := bind(t, nodeDN(node1)), bind(t, nodeDN(node2)), bind(t, controldDN)
	lease := func(st *ldapschema.Store, dn string) *ldapschema.Lease {
		return &ldapschema.Lease{Store: st, DN: dn, Holder: "test/" + dn, TTL: time.Minute}
	}
	// Leases taken here are given back, or the daemons of later tests would
	// stand by until they expire.
	acquire := func(what string, l *ldapschema.Lease) {
		t.Helper()
		ok, _, err := l.Acquire(time.Now())
		if err != nil || !ok {
			t.Errorf("%s: want the lease, got %v, %v", what, ok, err)
			return
		}
		t.Cleanup(func() {
			if err := l.Release(); err != nil {
				t.Errorf("release %s: %v", l.DN, err)
			}
		})
	}
	l1 := lease(n1, tree.NodeLease(node1))
	acquire("kvm-01 takes its heartbeat (and creates the containers)", l1)
	if err := l1.Publish(ldapschema.ChunkStoreReport+"/srv/backup", "gc removed=0"); err != nil {
		t.Errorf("kvm-01 publishes its chunk store report next to its heartbeat: %v", err)
	}
	t.Cleanup(func() { l1.Publish(ldapschema.ChunkStoreReport+"/srv/backup", "") })
	acquire("kvm-02 takes its heartbeat", lease(n2, tree.NodeLease(node2)))
	acquire("controld takes its lease", lease(ctl, tree.ControldLease()))

	refused(t, "kvm-02 writes kvm-01's heartbeat", n2.Update(tree.NodeLease(node1), "", map[string][]string{ldapschema.AttrDescription: {"holder=x until=2099-01-01T00:00:00Z"}}))
	_, _, err := lease(n1, tree.NodeLease("kvm-99")).Acquire(time.Now())
	refused(t, "kvm-01 creates a heartbeat for another host", err)
	refused(t, "kvm-01 writes the controld lease", n1.Update(tree.ControldLease(), "", map[string][]string{ldapschema.AttrDescription: nil}))
	refused(t, "controld writes kvm-01's heartbeat", ctl.Update(tree.NodeLease(node1), "", map[string][]string{ldapschema.AttrDescription: nil}))
	refused(t, "kvm-01 adds something else below ou=virtualization", n1.Add(func() *goldap.AddRequest {
		r := goldap.NewAddRequest("ou=other,"+tree.Virtualization(), nil)
		r.Attribute("objectClass", []string{"top", "organizationalUnit"})
		r.Attribute("ou", []string{"other"})
		return r
	}()))
	leases, err := ctl.ReadLeases(tree.Nodes())
	if err != nil || len(leases) < 2 {
		t.Errorf("controld reads the heartbeats: %d, %v", len(leases), err)
	}
	for _, l := range leases {
		if l.DN == tree.NodeLease(node1) && l.Reports[ldapschema.ChunkStoreReport+"/srv/backup"] != "gc removed=0" {
			t.Errorf("controld reads kvm-01's report: %+v", l)
		}
	}
}

// Both read what they need, and nothing outside the virtualization tree.
func TestAccountsRead(t *testing.T) {
	vm := addVM(t, node2, true)
	addLeaf(t, vm, leafName, "finished")
	for _, dn := range []string{controldDN, nodeDN(node1)} {
		st := bind(t, dn)
		es, err := st.SubtreeEntries(env.tree.VM(vm))
		if err != nil {
			t.Fatalf("%s reads the VM's subtree: %v", dn, err)
		}
		// VM, ou=devices, disk, ou=backup (with its configuration), leaf
		if len(es) != 5 {
			t.Errorf("%s sees %d entries of the VM's subtree, want 5", dn, len(es))
		}
		if _, err := st.Get(env.tree.Configuration(), "1.1"); err != nil {
			t.Errorf("%s reads ou=configuration: %v", dn, err)
		}
		for _, outside := range []string{base, webuiDN, nodeDN(node2)} {
			if _, err := st.Get(outside, "*"); err == nil {
				t.Errorf("%s reads %s", dn, outside)
			}
		}
		e, err := st.Get(dn, "userPassword")
		if err == nil && e.GetAttributeValue("userPassword") != "" {
			t.Errorf("%s reads its own password hash", dn)
		}
	}
}

// Identities other than ours are left to the site's own rules: the web UI
// (a rule of the site's after ours) starts a restore on a finished leaf.
func TestSiteRulesStillApply(t *testing.T) {
	vm := addVM(t, node1, true)
	leaf := addLeaf(t, vm, leafName, "finished")
	st := bind(t, webuiDN)

	allowed(t, "web UI starts a restore", st.Update(leaf, "", map[string][]string{
		ldapschema.AttrMode: {"unretainSmallFiles"}, ldapschema.AttrState: {"0"},
	}))
	// Debian's own rules give everyone read access, nothing more.
	refused(t, "web UI changes sstMemory", st.Update(env.tree.VM(vm), "", map[string][]string{ldapschema.AttrMemory: {"1"}}))
	if _, err := st.Get(env.tree.VM(vm), "1.1"); err != nil {
		t.Errorf("web UI reads the VM: %v", err)
	}
}

// Debian limits searches to 500 entries; the daemons must see everything.
func TestNoSizeLimitForDaemons(t *testing.T) {
	for i := 0; i < 4; i++ {
		addVM(t, node1, false)
	}
	setLimit := func(n string) error {
		return env.slapd.ModifyConfig("dn: olcDatabase={-1}frontend,cn=config\nchangetype: modify\nreplace: olcSizeLimit\nolcSizeLimit: " + n + "\n")
	}
	if err := setLimit("3"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := setLimit("500"); err != nil {
			t.Error(err)
		}
	})
	filter := "(objectClass=" + ldapschema.ClassVirtualMachine + ")"
	if _, err := bind(t, webuiDN).Search(env.tree.VirtualMachines(), goldap.ScopeSingleLevel, filter, []string{"1.1"}); !goldap.IsErrorWithCode(err, goldap.LDAPResultSizeLimitExceeded) {
		t.Fatalf("the web UI's search: want size limit exceeded, got %v (is the limit in force?)", err)
	}
	for _, dn := range []string{controldDN, nodeDN(node1)} {
		es, err := bind(t, dn).Search(env.tree.VirtualMachines(), goldap.ScopeSingleLevel, filter, []string{"1.1"})
		if err != nil || len(es) < 4 {
			t.Errorf("%s: %d VMs, %v; want all", dn, len(es), err)
		}
	}
}

// The index LDIF leaves every attribute the daemons search by indexed.
func TestIndexes(t *testing.T) {
	c, err := goldap.DialURL(env.slapd.LDAPIURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ExternalBind(); err != nil {
		t.Fatal(err)
	}
	res, err := c.Search(goldap.NewSearchRequest("olcDatabase={1}mdb,cn=config", goldap.ScopeBaseObject, goldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"olcDbIndex"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("read the database's configuration: %v", err)
	}
	have := map[string]bool{}
	for _, v := range res.Entries[0].GetAttributeValues("olcDbIndex") {
		f := strings.Fields(v)
		for _, a := range strings.Split(f[0], ",") {
			if len(f) > 1 && strings.Contains(f[1], "eq") {
				have[strings.ToLower(a)] = true
			}
		}
	}
	for _, a := range []string{"objectClass", "ou", "sstNode", "sstProvisioningMode", "sstVirtualMachine", "sstVirtualMachinePool", "entryUUID", "entryCSN"} {
		if !have[strings.ToLower(a)] {
			t.Errorf("no equality index on %s", a)
		}
	}
}
