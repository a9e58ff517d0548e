package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Shared is what the tests of one package share, built once by TestMain in a
// temporary directory of its own: a cold slapd or libvirtd costs seconds.
type Shared struct {
	Root     string // removed when the tests are done
	cleanups []func()
}

// Main builds the shared world with setup, runs the tests, undoes the world
// and exits. A failed setup exits with 1 before any test, the error on stderr.
func Main(m *testing.M, prefix string, setup func(*Shared) error) {
	os.Exit(runShared(m, prefix, setup))
}

func runShared(m *testing.M, prefix string, setup func(*Shared) error) int {
	root, err := os.MkdirTemp("", prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sh := &Shared{Root: root}
	defer sh.undo()
	if err := setup(sh); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// Cleanup registers f to run when the tests are done, the last one first.
func (sh *Shared) Cleanup(f func()) { sh.cleanups = append(sh.cleanups, f) }

func (sh *Shared) undo() {
	for i := len(sh.cleanups) - 1; i >= 0; i-- {
		sh.cleanups[i]()
	}
	os.RemoveAll(sh.Root)
}

// StartSlapd starts a slapd, in Root/slapd unless opts.Dir says otherwise,
// and stops it when the tests are done. As with SlapdFor, it never syncs.
func (sh *Shared) StartSlapd(opts SlapdOptions) (*Slapd, error) {
	if opts.Dir == "" {
		opts.Dir = filepath.Join(sh.Root, "slapd")
	}
	opts.NoSync = true
	s, err := StartSlapd(opts)
	if err != nil {
		return nil, fmt.Errorf("slapd: %w", err)
	}
	sh.Cleanup(func() { s.Stop() })
	return s, nil
}

// StartLibvirtd starts a libvirtd, in Root/libvirt unless opts.Dir says
// otherwise, and stops it when the tests are done.
func (sh *Shared) StartLibvirtd(opts LibvirtdOptions) (*Libvirtd, error) {
	if opts.Dir == "" {
		opts.Dir = filepath.Join(sh.Root, "libvirt")
	}
	d, err := StartLibvirtd(opts)
	if err != nil {
		return nil, fmt.Errorf("libvirtd: %w", err)
	}
	sh.Cleanup(func() {
		if err := d.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop libvirtd:", err)
		}
	})
	return d, nil
}

// MountTmpfs mounts a tmpfs of size bytes on dir until the tests are done.
func (sh *Shared) MountTmpfs(dir string, size int64) error {
	unmount, err := MountTmpfs(dir, size)
	if err != nil {
		return fmt.Errorf("tmpfs: %w", err)
	}
	sh.Cleanup(func() { unmount() })
	return nil
}
