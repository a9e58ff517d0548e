package format

import (
	"os/user"
	"strconv"
	"testing"
)

// Owner and group are names or numbers; "" keeps the current one.
func TestLookupOwner(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(me.Gid)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(me.Uid)
	gid, _ := strconv.Atoi(me.Gid)
	for _, tc := range []struct {
		owner, group string
		uid, gid     int
	}{
		{me.Username, g.Name, uid, gid},
		{"4711", "4712", 4711, 4712},
		{"", "", -1, -1},
		{me.Username, "", uid, -1},
	} {
		u, gr, err := LookupOwner(tc.owner, tc.group)
		if err != nil || u != tc.uid || gr != tc.gid {
			t.Errorf("LookupOwner(%q, %q) = %d, %d, %v; want %d, %d", tc.owner, tc.group, u, gr, err, tc.uid, tc.gid)
		}
	}
	if _, _, err := LookupOwner("no-such-user-here", ""); err == nil {
		t.Error("an unknown user resolved")
	}
	if _, _, err := LookupOwner("", "no-such-group-here"); err == nil {
		t.Error("an unknown group resolved")
	}
}
