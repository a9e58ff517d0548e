package libvirt

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// One libvirtd for the package: a cold start costs seconds.
var (
	lvd *testenv.Libvirtd
	// ramDisk is a tmpfs, as in production, so the state file crosses
	// filesystems on its way to the retain directory. 2 GiB: a live save of
	// the benchmark's 512 MiB guest has room for passes beyond its first,
	// as on a host with RAM to spare, and is not bounded by the room.
	ramDisk string
	// smallFS is a tmpfs too small for a state file; tinyRAM is too small
	// for anything but the tests that want a save to fail.
	smallFS, tinyRAM string
	// sharedH serves the tests that need no test seam, concurrently.
	sharedH *Hypervisor
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	base, err := os.MkdirTemp("", "lvt")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(base)
	ramDisk = filepath.Join(base, "ram")
	smallFS = filepath.Join(base, "small")
	tinyRAM = filepath.Join(base, "tiny")
	for _, fs := range []struct {
		dir  string
		size int64
	}{{ramDisk, 2 << 30}, {smallFS, 48 << 20}, {tinyRAM, 8 << 20}} {
		unmount, err := testenv.MountTmpfs(fs.dir, fs.size)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer unmount()
	}
	lvd, err = testenv.StartLibvirtd(testenv.LibvirtdOptions{Dir: filepath.Join(base, "lvd")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := lvd.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop libvirtd:", err)
		}
	}()
	sharedH, err = Open(lvd.URI)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer sharedH.Close()
	return m.Run()
}
