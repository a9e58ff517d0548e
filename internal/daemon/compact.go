package daemon

import (
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// compact returns ev with its entry copied into fresh strings, every
// attribute kept, without the raw values. go-ldap's ByteValues alias the
// buffer the entry was read into, so a cached entry would pin its whole
// packet: with 10,000 VMs that was two thirds of controld's memory. The
// caches are read through string values only; a binary value keeps its
// bytes in its string.
func compact(ev ldapschema.Event) ldapschema.Event {
	if ev.Entry == nil {
		return ev
	}
	e := &ldap.Entry{DN: strings.Clone(ev.Entry.DN), Attributes: make([]*ldap.EntryAttribute, 0, len(ev.Entry.Attributes))}
	for _, a := range ev.Entry.Attributes {
		vals := a.Values
		if len(vals) < len(a.ByteValues) {
			vals = make([]string, len(a.ByteValues))
			for i, b := range a.ByteValues {
				vals[i] = string(b)
			}
		} else {
			vals = make([]string, len(a.Values))
			for i, v := range a.Values {
				vals[i] = strings.Clone(v)
			}
		}
		e.Attributes = append(e.Attributes, &ldap.EntryAttribute{Name: strings.Clone(a.Name), Values: vals})
	}
	ev.Entry = e
	return ev
}
