package node

import (
	"testing"

	"github.com/stoneycloud/stoney-conductor/libvirt"
)

func TestParseSnapshotMode(t *testing.T) {
	for in, want := range map[string]SnapshotMode{"": SnapshotLive, "live": SnapshotLive, "save": SnapshotSave} {
		if got, err := ParseSnapshotMode(in); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"Live", "pause", " save"} {
		if _, err := ParseSnapshotMode(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// The leaf's execution times say how the memory was saved.
func TestSnapshotModeRan(t *testing.T) {
	for _, c := range []struct {
		res  libvirt.SnapshotResult
		want string
	}{
		{libvirt.SnapshotResult{Live: true}, "live"},
		{libvirt.SnapshotResult{Live: true, Bounded: true}, "live-bounded"},
		{libvirt.SnapshotResult{}, "save"},
	} {
		if got := snapshotModeRan(c.res); got != c.want {
			t.Errorf("%+v: %q, want %q", c.res, got, c.want)
		}
	}
}
