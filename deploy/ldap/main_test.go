package ldap_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// One slapd for the package, set up as the operator guide says.
var env struct {
	root  string
	slapd *testenv.Slapd
	tree  ldapschema.Tree
}

const (
	base       = "o=stepping-stone,c=ch" // the base the shipped LDIF files are written for
	accounts   = "ou=stoney-conductor," + base
	controldDN = "cn=controld," + accounts
	webuiDN    = "cn=webui," + base
	node1      = "kvm-01" // in stoney-conductor-accounts.ldif
	node2      = "kvm-02" // added as the guide says: a copy of kvm-01's entry
)

func nodeDN(host string) string { return "cn=" + host + ",ou=nodes," + accounts }

func TestMain(m *testing.M) {
	testenv.Main(m, "stoney-deploy-ldap-", func(sh *testenv.Shared) error {
		env.root = sh.Root
		env.tree = ldapschema.Tree{Base: base}
		var err error
		if env.slapd, err = sh.StartSlapd(testenv.SlapdOptions{Base: base, DebianInit: true}); err != nil {
			return err
		}
		if err := followGuide(); err != nil {
			return fmt.Errorf("setting up slapd as the operator guide says: %w\n%s", err, tailFile(env.slapd.LogPath))
		}
		return nil
	})
}

// tool runs an OpenLDAP client tool and returns its exit code and output.
func tool(stdin string, name string, args ...string) (int, string) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "LDAPNOINIT=1") // no ldaprc, no /etc/ldap/ldap.conf
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	default:
		return -1, err.Error()
	}
}

// asRoot is how the guide runs a tool on the LDAP server: as root over ldapi
// with SASL EXTERNAL. The guide says ldapi:///, the test server's socket is
// elsewhere.
func asRoot(args ...string) []string {
	return append([]string{"-Q", "-Y", "EXTERNAL", "-H", env.slapd.LDAPIURL}, args...)
}

// asAdmin binds as the database's root DN (the guide: -D cn=admin,<base> -W).
func asAdmin(args ...string) []string {
	return append([]string{"-x", "-H", env.slapd.URL, "-D", env.slapd.AdminDN, "-y", env.slapd.AdminPasswordFile()}, args...)
}

// followGuide applies this directory's LDIF files to a fresh Debian slapd
// with the commands of docs/operator-guide.md, in its order.
func followGuide() error {
	steps := []struct {
		what  string
		tool  string
		args  []string
		codes []int // acceptable exit codes
	}{
		{"schema", "ldapadd", asRoot("-f", "stoney-conductor-schema.ldif"), []int{0}},
		{"syncprov", "ldapmodify", asRoot("-c", "-f", "stoney-conductor-syncprov.ldif"), []int{0}},
		// Applied again, as on a directory that replicates already: the
		// module reports 20, the overlay 80 (overlay "syncprov" already in list).
		{"syncprov again", "ldapmodify", asRoot("-c", "-f", "stoney-conductor-syncprov.ldif"), []int{80}},
		// Debian indexes objectClass eq already: that one change reports 20.
		{"indexes", "ldapmodify", asRoot("-c", "-f", "stoney-conductor-indexes.ldif"), []int{0, 20}},
		{"access rules", "ldapmodify", asRoot("-f", "stoney-conductor-acl.ldif"), []int{0}},
		{"web UI access rules", "ldapmodify", asRoot("-f", "stoney-conductor-webui-acl.ldif"), []int{0}},
		{"accounts", "ldapadd", asAdmin("-f", "stoney-conductor-accounts.ldif"), []int{0}},
	}
	for _, s := range steps {
		code, out := tool("", s.tool, s.args...)
		ok := false
		for _, c := range s.codes {
			ok = ok || c == code
		}
		if !ok {
			return fmt.Errorf("%s: %s exited %d: %s", s.what, s.tool, code, out)
		}
	}
	if err := addNodeAccount(node2); err != nil {
		return err
	}
	for _, dn := range []string{controldDN, nodeDN(node1)} {
		if err := setPassword(dn); err != nil {
			return err
		}
	}
	return addWebUI()
}

// addNodeAccount adds the account of another host the way the guide says:
// kvm-01's entry from stoney-conductor-accounts.ldif, renamed.
func addNodeAccount(host string) error {
	data, err := os.ReadFile("stoney-conductor-accounts.ldif")
	if err != nil {
		return err
	}
	var entry string
	for _, rec := range strings.Split(string(data), "\n\n") {
		if strings.Contains(rec, "dn: "+nodeDN(node1)) {
			entry = rec
		}
	}
	if entry == "" {
		return errors.New("stoney-conductor-accounts.ldif holds no entry for " + node1)
	}
	entry = strings.ReplaceAll(entry, node1, host)
	if code, out := tool(entry+"\n", "ldapadd", asAdmin()...); code != 0 {
		return fmt.Errorf("add node account %s: ldapadd exited %d: %s", host, code, out)
	}
	return setPassword(nodeDN(host))
}

// passwordFile is where a test keeps the password of dn.
func passwordFile(dn string) string {
	return filepath.Join(env.root, strings.NewReplacer(",", "_", "=", "-").Replace(dn)+".password")
}

// setPassword writes a random password to the account's file, without a
// newline, and sets it with ldappasswd -T, as the guide does.
func setPassword(dn string) error {
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	if err := os.WriteFile(passwordFile(dn), []byte(base64.StdEncoding.EncodeToString(raw)), 0o600); err != nil {
		return err
	}
	if code, out := tool("", "ldappasswd", asAdmin("-T", passwordFile(dn), dn)...); code != 0 {
		return fmt.Errorf("ldappasswd %s: exited %d: %s", dn, code, out)
	}
	return nil
}

// addWebUI stands for the site's other users: an account with a rule of the
// site's own, placed after ours, that lets it start restores on any leaf.
func addWebUI() error {
	entry := fmt.Sprintf(`dn: %s
objectClass: top
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: webui
userPassword: {CRYPT}*
`, webuiDN)
	if code, out := tool(entry, "ldapadd", asAdmin()...); code != 0 {
		return fmt.Errorf("add web UI account: ldapadd exited %d: %s", code, out)
	}
	if err := setPassword(webuiDN); err != nil {
		return err
	}
	rule := fmt.Sprintf(`dn: olcDatabase={1}mdb,cn=config
changetype: modify
add: olcAccess
olcAccess: {14}to dn.subtree="%s" attrs=sstProvisioningMode,sstProvisioningState by dn.exact="%s" write by * break
`, env.tree.VirtualMachines(), webuiDN)
	return env.slapd.ModifyConfig(rule)
}

// bind dials the directory as dn with the password from its file, as the
// daemons do (passwordFile in their YAML).
func bind(t testing.TB, dn string) *ldapschema.Store {
	t.Helper()
	return testenv.DialStore(t, ldapschema.StoreOptions{URL: env.slapd.URL, BindDN: dn, PasswordFile: passwordFile(dn), Base: base})
}

// admin is the database's root DN, which no access rule limits.
func admin(t testing.TB) *ldapschema.Store {
	t.Helper()
	return env.slapd.AdminStore(t)
}

var seq atomic.Int64

// vmName is a VM name no other test uses.
func vmName(prefix string) string { return fmt.Sprintf("%s-%d", prefix, seq.Add(1)) }

// addVM writes a VM on host with one disk and its own backup configuration,
// as the web UI would (bound as admin).
func addVM(t testing.TB, host string, withConfig bool) string {
	t.Helper()
	name := vmName("vm")
	var cfg *ldapschema.BackupConfig
	if withConfig {
		c := testenv.LocalConfig("/var/backup/virtualization", "/var/virtualization/retain", "")
		cfg = &c
	}
	disks := []testenv.DiskSpec{{Target: "vda", Path: "/var/virtualization/vm-persistent/pool-a/" + name + "-vda.qcow2"}}
	if err := testenv.VMEntries(admin(t), host, "pool-a", name, disks, cfg); err != nil {
		t.Fatal(err)
	}
	return name
}

// addLeaf adds a backup leaf of vm in mode (State "0": a pending request).
func addLeaf(t testing.TB, vm, leaf, mode string) string {
	t.Helper()
	st := admin(t)
	if err := controlEnsureBackup(st, vm); err != nil {
		t.Fatal(err)
	}
	if err := st.Add(ldapschema.NewLeafAddRequest(env.tree, vm, leaf, mode, "0")); err != nil {
		t.Fatal(err)
	}
	return env.tree.Leaf(vm, leaf)
}

// controlEnsureBackup adds the VM's ou=backup container if it is missing.
func controlEnsureBackup(st *ldapschema.Store, vm string) error {
	if _, err := st.Get(env.tree.VMBackup(vm), "1.1"); err == nil {
		return nil
	}
	req := goldap.NewAddRequest(env.tree.VMBackup(vm), nil)
	req.Attribute("objectClass", []string{"top", "organizationalUnit"})
	req.Attribute("ou", []string{"backup"})
	return st.Add(req)
}

// refused asserts that err is LDAP result 50, insufficient access.
func refused(t testing.TB, what string, err error) {
	t.Helper()
	if !goldap.IsErrorWithCode(err, goldap.LDAPResultInsufficientAccessRights) {
		t.Errorf("%s: want insufficient access (50), got %v", what, err)
	}
}

// allowed asserts that err is nil.
func allowed(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: want success, got %v", what, err)
	}
}

// attr reads one attribute as the admin.
func attr(t testing.TB, dn, name string) string {
	t.Helper()
	e, err := admin(t).Get(dn, name)
	if err != nil {
		t.Fatal(err)
	}
	return e.GetAttributeValue(name)
}

func tailFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}
