package daemon

import (
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// compact keeps every attribute and value the node reads, binary ones with
// their bytes, and drops only the raw buffers.
func TestCompactKeepsEveryValue(t *testing.T) {
	raw := []byte("sstBlob: \x00\xff binary")
	want := string(raw[9:])
	in := &ldap.Entry{DN: "sstVirtualMachine=vm1,ou=virtual machines,dc=example", Attributes: []*ldap.EntryAttribute{
		{Name: "sstNode", Values: []string{"h1"}, ByteValues: [][]byte{[]byte("h1")}},
		{Name: "description", Values: []string{"a", "b"}},
		{Name: "sstBlob", ByteValues: [][]byte{raw[9:]}},
	}}
	out := compact(ldapschema.Event{Kind: ldapschema.EventPut, DN: in.DN, Entry: in}).Entry
	if out == in || out.DN != in.DN || len(out.Attributes) != 3 {
		t.Fatalf("compacted %+v", out)
	}
	for _, a := range out.Attributes {
		if a.ByteValues != nil {
			t.Errorf("%s keeps its raw values", a.Name)
		}
	}
	if v := out.GetAttributeValue("sstNode"); v != "h1" {
		t.Errorf("sstNode = %q", v)
	}
	if v := out.GetAttributeValues("description"); len(v) != 2 || v[0] != "a" || v[1] != "b" {
		t.Errorf("description = %q", v)
	}
	if v := out.GetAttributeValue("sstBlob"); v != want {
		t.Errorf("binary value = %q", v)
	}
	raw[9] = 'X' // the packet buffer is reused: the cache must not see it
	if v := out.GetAttributeValue("sstBlob"); v != want {
		t.Errorf("compacted value aliases the read buffer: %q", v)
	}
	if ev := compact(ldapschema.Event{Kind: ldapschema.EventSynced}); ev.Entry != nil {
		t.Error("a synced event got an entry")
	}
}
