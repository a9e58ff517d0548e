package libvirt

import (
	"fmt"
	"path/filepath"
	"strings"
)

// sameDisks compares the directory's disks with the domain's, by target,
// with cleaned paths.
func sameDisks(want, have []Disk) error {
	if len(want) != len(have) {
		return fmt.Errorf("%w: directory has %s, domain has %s", ErrDiskMismatch, diskList(want), diskList(have))
	}
	m := map[string]string{}
	for _, d := range have {
		m[d.Target] = filepath.Clean(d.Source)
	}
	for _, d := range want {
		if src, ok := m[d.Target]; !ok || src != filepath.Clean(d.Source) {
			return fmt.Errorf("%w: directory has %s, domain has %s", ErrDiskMismatch, diskList(want), diskList(have))
		}
	}
	return nil
}

func diskList(ds []Disk) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, d.Target+"="+d.Source)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
