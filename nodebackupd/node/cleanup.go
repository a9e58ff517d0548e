package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// tidy removes what a finished leaf left in the retain directory (a cancelled
// restore's unretained files, a failed step's leftovers), but never a file a
// live disk still reads from: after a failed merge the retained image is the
// VM's data.
func (a *Agent) tidy(ctx context.Context, vm ldapschema.VM, leaf ldapschema.Leaf) error {
	j, err := a.prepare(vm, leaf, a.o.Log.WithField("vm", vm.Name))
	if err != nil {
		return nil // no usable config: nothing of ours can be there
	}
	dir := j.layout.RetainDir()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, d := range j.disks {
		chain, err := libvirt.ImageChain(d.Source)
		if err != nil {
			return err // cannot tell: keep everything, try again later
		}
		for _, im := range chain {
			if inDir(im.Filename, dir) || inDir(im.BackingFile, dir) {
				j.log.WithField("disk", d.Source).Warn("retain directory of a finished leaf still backs a live disk; kept")
				return nil
			}
		}
	}
	j.log.WithField("dir", dir).Info("removing what a finished leaf left in the retain directory")
	return os.RemoveAll(dir)
}

func inDir(path, dir string) bool {
	if path == "" {
		return false
	}
	p := filepath.Clean(path)
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}
