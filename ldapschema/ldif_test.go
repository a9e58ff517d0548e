package ldapschema

import (
	"errors"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

// sameEntries compares entries by DN, attribute names and values, ignoring
// whether Values or ByteValues carried them.
func sameEntries(t *testing.T, got, want []*ldap.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].DN != want[i].DN {
			t.Fatalf("entry %d: DN %q, want %q", i, got[i].DN, want[i].DN)
		}
		if len(got[i].Attributes) != len(want[i].Attributes) {
			t.Fatalf("entry %q: %d attributes, want %d", want[i].DN, len(got[i].Attributes), len(want[i].Attributes))
		}
		for j, a := range want[i].Attributes {
			g := got[i].Attributes[j]
			if g.Name != a.Name || !reflect.DeepEqual(attrStrings(g), attrStrings(a)) {
				t.Fatalf("entry %q attribute %d: %q %q, want %q %q", want[i].DN, j, g.Name, attrStrings(g), a.Name, attrStrings(a))
			}
			if !reflect.DeepEqual(g.Values, attrStrings(g)) || len(g.ByteValues) != len(g.Values) {
				t.Fatalf("entry %q attribute %s: Values and ByteValues disagree", want[i].DN, g.Name)
			}
		}
	}
}

// sameEntrySets is sameEntries regardless of order: FormatLDIF sorts siblings.
func sameEntrySets(t *testing.T, got, want []*ldap.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	byDN := map[string]*ldap.Entry{}
	for _, e := range got {
		byDN[e.DN] = e
	}
	for _, e := range want {
		g, ok := byDN[e.DN]
		if !ok {
			t.Fatalf("entry %q lost", e.DN)
		}
		sameEntries(t, []*ldap.Entry{g}, []*ldap.Entry{e})
	}
}

func entry(dn string, kv ...string) *ldap.Entry {
	e := &ldap.Entry{DN: dn}
	for i := 0; i < len(kv); i += 2 {
		addLDIFValue(e, kv[i], kv[i+1])
	}
	return e
}

func TestFormatLDIF(t *testing.T) {
	vm := testTree.VM("kvm-005")
	got := FormatLDIF([]*ldap.Entry{
		entry(testTree.Disk("kvm-005", "vda"), "sstDisk", "vda", "sstSourceFile", "/var/virtualization/vm-persistent/0f83f084-8080-413e-b558-b678e504836e/8798561b-d5de-471b-a6fc-ec2b4831ed12.qcow2"),
		entry(vm, "objectClass", "top", "objectClass", "sstVirtualizationVirtualMachine", "sstDisplayName", "Grüezi", "description", " leading space", "sstVCPU", "1"),
		entry(testTree.Devices("kvm-005"), "ou", "devices", "description", ""),
	})
	want := `dn: sstVirtualMachine=kvm-005,ou=virtual machines,ou=virtualization,ou=servi
 ces,o=stepping-stone,c=ch
objectClass: top
objectClass: sstVirtualizationVirtualMachine
sstDisplayName:: R3LDvGV6aQ==
description:: IGxlYWRpbmcgc3BhY2U=
sstVCPU: 1

dn: ou=devices,sstVirtualMachine=kvm-005,ou=virtual machines,ou=virtualizati
 on,ou=services,o=stepping-stone,c=ch
ou: devices
description:

dn: sstDisk=vda,ou=devices,sstVirtualMachine=kvm-005,ou=virtual machines,ou=
 virtualization,ou=services,o=stepping-stone,c=ch
sstDisk: vda
sstSourceFile: /var/virtualization/vm-persistent/0f83f084-8080-413e-b558-b67
 8e504836e/8798561b-d5de-471b-a6fc-ec2b4831ed12.qcow2
`
	if got != want {
		t.Fatalf("FormatLDIF:\n%s\nwant:\n%s", got, want)
	}
	for _, line := range strings.Split(got, "\n") {
		if len(line) > 76 {
			t.Errorf("line longer than 76: %q", line)
		}
	}
}

func TestFormatLDIFParentsFirst(t *testing.T) {
	// Children and siblings in any order: every entry comes after its parent.
	dns := []string{
		testTree.Leaf("b", "20121002T010000Z"),
		testTree.Disk("a", "vda"),
		testTree.VMBackup("b"),
		testTree.VM("b"),
		testTree.Devices("a"),
		testTree.VM("a"),
		testTree.Leaf("b", "20121001T010000Z"),
		testTree.VirtualMachines(),
	}
	var entries []*ldap.Entry
	for _, dn := range dns {
		entries = append(entries, entry(dn, "objectClass", "top"))
	}
	parsed, err := ParseLDIF(FormatLDIF(entries))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range parsed {
		if parent := e.DN[strings.Index(e.DN, ",")+1:]; containsFold(dns, parent) && !seen[parent] {
			t.Errorf("%q comes before its parent", e.DN)
		}
		seen[e.DN] = true
	}
	if len(parsed) != len(dns) || parsed[0].DN != testTree.VirtualMachines() {
		t.Errorf("order: %d entries, first %q", len(parsed), parsed[0].DN)
	}
}

func TestLDIFRoundTripTable(t *testing.T) {
	values := []string{
		"", "plain", " leading space", "trailing space ", ":colon first", "<less first", "a:b", "a<b",
		"#hash first", "line\nbreak", "cr\rhere", "nul\x00byte", "tab\there", "\x7f", "Grüezi", "日本語",
		"\xff\xfe invalid UTF-8", strings.Repeat("x", 75), strings.Repeat("y", 76), strings.Repeat("z", 77),
		strings.Repeat("ä", 100), "dn: fake", "-", "version: 1",
	}
	var entries []*ldap.Entry
	for i, v := range values {
		// Each value as an attribute value, and (escaped) in the DN too.
		dn := "cn=" + ldap.EscapeDN(v) + ",o=test"
		if v == "" {
			dn = "cn=empty,o=test"
		}
		e := entry(dn, "objectClass", "top", "description", v, "cn", v)
		if i%2 == 0 {
			addLDIFValue(e, "description", "second")
		}
		entries = append(entries, e)
	}
	entries = append([]*ldap.Entry{entry("o=test", "o", "test")}, entries...)
	text := FormatLDIF(entries)
	got, err := ParseLDIF(text)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if got[0].DN != "o=test" {
		t.Errorf("parent o=test is not first but %q", got[0].DN)
	}
	sameEntrySets(t, got, entries)
	if again := FormatLDIF(got); again != text {
		t.Fatalf("second round differs:\n%s\n---\n%s", again, text)
	}
}

func TestLDIFRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	alphabet := []byte("abcXYZ019 :<#=,+\\\"\n\r\t\x00\x7f-./")
	randomString := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			if r.Intn(8) == 0 {
				b[i] = byte(r.Intn(256))
			} else {
				b[i] = alphabet[r.Intn(len(alphabet))]
			}
		}
		return string(b)
	}
	for round := 0; round < 200; round++ {
		var entries []*ldap.Entry
		for i := 0; i < 1+r.Intn(4); i++ {
			e := &ldap.Entry{DN: "cn=" + ldap.EscapeDN(randomString(1+r.Intn(90))) + ",o=test"}
			for j := 0; j < 1+r.Intn(4); j++ {
				name := []string{"cn", "description", "sstSourceFile", "userPassword;binary"}[j]
				for k := 0; k < 1+r.Intn(3); k++ {
					addLDIFValue(e, name, randomString(r.Intn(200)))
				}
			}
			entries = append(entries, e)
		}
		text := FormatLDIF(entries)
		got, err := ParseLDIF(text)
		if err != nil {
			t.Fatalf("round %d: %v\n%s", round, err, text)
		}
		sameEntrySets(t, got, entries)
		for _, line := range strings.Split(text, "\n") {
			if len(line) > 76 {
				t.Fatalf("round %d: line longer than 76: %q", round, line)
			}
		}
	}
}

func FuzzLDIFRoundTrip(f *testing.F) {
	for _, s := range []string{"", "x", " x", "x ", ":", "<", "\n", "\x00", "ü", strings.Repeat("ab", 80)} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, dnValue, value string) {
		e := entry("cn="+ldap.EscapeDN(dnValue)+",o=test", "description", value)
		got, err := ParseLDIF(FormatLDIF([]*ldap.Entry{e}))
		if err != nil {
			t.Fatal(err)
		}
		sameEntries(t, got, []*ldap.Entry{e})
	})
}

func TestParseLDIF(t *testing.T) {
	text := "# a comment\r\n" +
		"#  folded comment that goes\r\n" +
		" on here: dn: not an entry\r\n" +
		"version: 1\r\n" +
		"\r\n" +
		"\r\n" +
		"dn:: Y249R3LDvGV6aSxvPXRlc3Q=\r\n" + // cn=Grüezi,o=test
		"objectClass: top\r\n" +
		"# comment inside a record\r\n" +
		"OBJECTCLASS: person\r\n" +
		"description:   leading blanks are FILL\r\n" +
		"sn: fol\r\n" +
		" ded\r\n" +
		"cn:\r\n" +
		"\r\n" +
		"dn: o=test\r\n" +
		"o: test\r\n"
	got, err := ParseLDIF(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []*ldap.Entry{
		{DN: "cn=Grüezi,o=test", Attributes: []*ldap.EntryAttribute{
			ldap.NewEntryAttribute("objectClass", []string{"top", "person"}),
			ldap.NewEntryAttribute("description", []string{"leading blanks are FILL"}),
			ldap.NewEntryAttribute("sn", []string{"folded"}),
			ldap.NewEntryAttribute("cn", []string{""}),
		}},
		{DN: "o=test", Attributes: []*ldap.EntryAttribute{ldap.NewEntryAttribute("o", []string{"test"})}},
	}
	sameEntries(t, got, want)

	if e, err := ParseLDIF("\n\n# only comments\n"); err != nil || len(e) != 0 {
		t.Errorf("empty input: %v, %v", e, err)
	}
	if e, err := ParseLDIF("version: 1\ndn: o=x\no: x\n"); err != nil || len(e) != 1 {
		t.Errorf("version directly followed by a record: %v, %v", e, err)
	}
}

func TestParseLDIFRefuses(t *testing.T) {
	for name, text := range map[string]string{
		"change record":    "dn: o=x\nchangetype: modify\nreplace: o\no: y\n",
		"control":          "dn: o=x\ncontrol: 1.2.3\n",
		"no dn":            "o: x\n",
		"two dns":          "dn: o=x\ndn: o=y\n",
		"bad base64":       "dn: o=x\ndescription:: !!!\n",
		"url value":        "dn: o=x\njpegPhoto:< file:///etc/passwd\n",
		"no colon":         "dn: o=x\njust text\n",
		"leading fold":     " dn: o=x\n",
		"fold after blank": "dn: o=x\n\n continued\n",
		"blank in name":    "dn: o=x\nbad name: v\n",
		"empty name":       "dn: o=x\n: v\n",
		"version 2":        "version: 2\ndn: o=x\n",
	} {
		if _, err := ParseLDIF(text); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", name, err)
		} else if !strings.Contains(err.Error(), "line") {
			t.Errorf("%s: error %q does not name the line", name, err)
		}
	}
}
