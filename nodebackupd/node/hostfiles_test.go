package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// A directory the vm-storage group may write holds a link planted to a
// victim directory: the root daemon neither creates directories through it
// nor deletes what it points to.
func TestPlantedSymlinkIsNotFollowed(t *testing.T) {
	root, victim := t.TempDir(), t.TempDir()
	l := format.Layout{RetainRoot: filepath.Join(root, "retain"), BackupRoot: filepath.Join(root, "backup"),
		Kind: "vm-persistent", Pool: "pool", VM: "vm", Leaf: "20240101T000000Z"}
	keep := filepath.Join(victim, l.Leaf, "keep")
	if err := os.MkdirAll(filepath.Dir(keep), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keep, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{l.RetainRoot, l.BackupRoot} {
		if err := os.MkdirAll(filepath.Join(r, l.Kind, l.Pool), 0o770); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(victim, filepath.Join(r, l.Kind, l.Pool, l.VM)); err != nil {
			t.Fatal(err)
		}
	}
	j := &job{layout: l, log: logrus.New(), cfg: ldapschema.BackupConfig{DirPermission: 0o777}}
	a := &Agent{}
	if err := j.mkdirOwned(l.RetainDir()); err == nil {
		t.Error("a directory was created through a planted link")
	}
	if _, err := a.delete(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(keep)
	fi, _ := os.Stat(filepath.Dir(keep))
	if err != nil || string(b) != "secret" || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the victim changed: %q %v %v", b, fi, err)
	}
	if fi, err := os.Lstat(filepath.Join(l.BackupRoot, l.Kind, l.Pool, l.VM)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link itself: %v %v", fi, err)
	}
}
