package libvirt

import (
	"fmt"
	"os"
	"syscall"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// freeBytes is the space left in dir for an unprivileged writer (the
// root reserve is not counted on).
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func device(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no device number", path)
	}
	return uint64(st.Dev), nil
}

// owner is an Ownership resolved to ids; -1 keeps the current value.
type owner struct {
	uid, gid int
	perm     os.FileMode
}

// resolveOwnership looks names (or numbers) up before anything is touched.
func resolveOwnership(o Ownership) (owner, error) {
	r := owner{uid: -1, gid: -1, perm: o.Perm}
	var err error
	if r.uid, err = format.LookupUser(o.Owner); err != nil {
		return r, wrap(ErrOwnership, err, "owner %q", o.Owner)
	}
	if r.gid, err = format.LookupGroup(o.Group); err != nil {
		return r, wrap(ErrOwnership, err, "group %q", o.Group)
	}
	return r, nil
}

// applyAt sets ownership, then permission, on p through the seam, without
// following a link.
func (o owner) applyAt(s *hostio.Seam, p hostio.Path) error {
	if err := s.Chown(p, o.uid, o.gid); err != nil {
		return wrap(ErrOwnership, err, "%s", p)
	}
	if o.perm != 0 {
		if err := s.Chmod(p, o.perm); err != nil {
			return wrap(ErrPermission, err, "%s", p)
		}
	}
	return nil
}
