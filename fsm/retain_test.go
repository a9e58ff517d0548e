package fsm

import (
	"strings"
	"testing"
)

func TestExpired(t *testing.T) {
	leaf := func(n string, m Mode, rv int) Leaf { return Leaf{Key: n, VM: "v", Name: n, Mode: m, ReturnValue: rv} }
	good := func(n string) Leaf { return leaf(n, Finished, 0) }
	bad := func(n string) Leaf { return leaf(n, Finished, 5) }
	in := func(n string, m Mode) Leaf { return leaf(n, m, 0) }
	cases := []struct {
		name   string
		leaves []Leaf
		n      int
		want   string
	}{
		{"fewer than n", []Leaf{good("d1"), good("d2")}, 3, ""},
		{"the oldest beyond n go", []Leaf{good("d3"), good("d1"), good("d4"), good("d2")}, 3, "d1"},
		{"one iteration", []Leaf{good("d1"), good("d2"), good("d3")}, 1, "d1 d2"},
		{"newer failures never push the newest good one out",
			[]Leaf{good("d1"), bad("d2"), bad("d3"), bad("d4")}, 1, "d2 d3"},
		{"failures within the kept window stay",
			[]Leaf{good("d1"), good("d2"), bad("d3"), good("d4")}, 3, ""},
		{"failures older than the oldest kept good one go",
			[]Leaf{bad("d1"), good("d2"), good("d3"), bad("d4"), good("d5")}, 2, "d1 d2"},
		{"only the n newest failures stay",
			[]Leaf{good("d1"), bad("d2"), bad("d3"), bad("d4"), bad("d5")}, 2, "d2 d3"},
		{"leaves at work are neither counted nor deleted",
			[]Leaf{in("d1", UnretainingLargeFiles), good("d2"), in("d3", Deleting), good("d4"), in("d5", Snapshotting)}, 1, "d2"},
		{"no iterations known", []Leaf{good("d1"), good("d2")}, 0, ""},
	}
	for _, tc := range cases {
		var got []string
		for _, l := range Expired(tc.leaves, tc.n) {
			got = append(got, l.Name)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: expired %q, want %q", tc.name, got, tc.want)
		}
	}
}
