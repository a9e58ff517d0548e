package docs

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// ldifBlocks returns the ```ldif blocks of a Markdown file, in order. Blocks
// fenced without the ldif tag (alternatives, fragments) are not returned.
func ldifBlocks(t *testing.T, name string) []string {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```ldif\n(.*?)```").FindAllStringSubmatch(string(data), -1) {
		out = append(out, m[1])
	}
	return out
}

// apply adds (a block without changetype) or modifies with the real tools.
func apply(s *testenv.Slapd, block string) error {
	if strings.Contains(block, "\nchangetype:") {
		return s.LDAPModify(block)
	}
	return s.LDAPAdd(block)
}

// Every LDIF block of manual-ldapmodify.md, applied in order as an operator
// (and, for the node's and controld's steps, as they would), is accepted:
// a whole backup, a restore, a delete and the exclusions, on the seed's VMs.
func TestManualLDIF(t *testing.T) {
	s, st := testenv.SlapdStore(t, testenv.SlapdOptions{})
	// kvm-005 as the seed has it, kvm-006 without ou=backup, kvm-007 with an
	// ou=backup that only holds leaves.
	for _, vm := range []string{"kvm-005", "kvm-006", "kvm-007"} {
		if err := testenv.VMEntries(st, "node-1", "pool-a", vm, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.LDAPAdd("dn: " + st.Tree.VMBackup("kvm-007") + "\nobjectClass: top\nobjectClass: organizationalUnit\nou: backup\n"); err != nil {
		t.Fatal(err)
	}

	blocks := ldifBlocks(t, "manual-ldapmodify.md")
	if len(blocks) < 20 {
		t.Fatalf("found %d LDIF blocks; the test's pattern no longer matches the document", len(blocks))
	}
	// The seed's own Step 00 (0660) is refused, as the document says.
	seed := strings.Replace(blocks[0], "Permission: 660", "Permission: 0660", 1)
	if err := apply(s, seed); err == nil || !strings.Contains(err.Error(), "invalid per syntax") {
		t.Errorf("Step 00 with 0660: want the syntax error the document quotes, got %v", err)
	}
	for i, b := range blocks {
		if err := apply(s, b); err != nil {
			t.Fatalf("block %d of manual-ldapmodify.md:\n%s\n%v", i+1, b, err)
		}
	}

	leaf := st.Tree.Leaf("kvm-005", "20121002T010000Z")
	if _, err := st.Get(leaf); err == nil {
		t.Errorf("leaf %s still there after the delete", leaf)
	}
	for vm, want := range map[string]string{"kvm-005": "TRUE", "kvm-006": "TRUE", "kvm-007": ""} {
		e, err := st.Get(st.Tree.VMBackup(vm), "*")
		if err != nil {
			t.Fatal(err)
		}
		if got := e.GetAttributeValue(ldapschema.AttrBackupExcludeFromBackup); got != want {
			t.Errorf("%s: sstBackupExcludeFromBackup %q, want %q", vm, got, want)
		}
	}
}

// The LDIF of operator-guide.md makes a new Debian directory ready: the
// containers on a fresh base, then a global backup configuration that the
// daemons read as meant (mode 660, three iterations, nightly at 03:00).
func TestOperatorGuideLDIF(t *testing.T) {
	s := testenv.SlapdFor(t, testenv.SlapdOptions{DebianInit: true, Base: "dc=example,dc=org"})
	schema, err := os.ReadFile("../deploy/ldap/stoney-conductor-schema.ldif")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ModifyConfig(string(schema), "-a"); err != nil {
		t.Fatal(err)
	}
	st := s.AdminStore(t)
	// The test server comes with the containers; the guide starts without.
	cs := st.Tree.Containers()
	for i := len(cs) - 1; i >= 0; i-- {
		if err := st.Delete(cs[i]); err != nil {
			t.Fatal(err)
		}
	}
	blocks := ldifBlocks(t, "operator-guide.md")
	if len(blocks) != 2 {
		t.Fatalf("found %d LDIF blocks in operator-guide.md, want the containers and the global configuration", len(blocks))
	}
	for i, b := range blocks {
		if err := apply(s, b); err != nil {
			t.Fatalf("block %d of operator-guide.md:\n%s\n%v", i+1, b, err)
		}
	}
	e, err := st.Get(st.Tree.GlobalBackup(), "*")
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := ldapschema.EffectiveConfig(nil, nil, e)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Permission != 0o660 || cfg.Iterations != 3 || cfg.Group != "vm-storage" || cfg.RootDir != "/var/backup/virtualization" {
		t.Errorf("global configuration read as %+v", cfg)
	}
}
