package node

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// A sparse file is copied with its holes, checked, and recognised as already
// copied; a differing destination is not taken for a copy.
func TestCopyFileSparse(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xab}, 1<<20)
	f.WriteAt(data, 0)
	f.WriteAt(data, 200<<20)
	f.Truncate(400 << 20)
	f.Close()

	var last int64
	root := hostio.In(dir)
	n, err := CopyFile(context.Background(), nil, root.MustJoin("src"), root.MustJoin("dst"), 0o640, func(done, total int64) { last = done })
	if err != nil {
		t.Fatal(err)
	}
	if n != 2<<20 || last != n {
		t.Fatalf("copied %d data bytes (last progress %d), want %d", n, last, 2<<20)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 400<<20 || st.Blocks*512 > 8<<20 {
		t.Fatalf("copy is %d bytes with %d allocated: not sparse", st.Size, st.Blocks*512)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if same, err := SameFile(root.MustJoin("src"), root.MustJoin("dst")); err != nil || !same {
		t.Fatalf("SameFile after a copy: %v %v", same, err)
	}
	g, _ := os.OpenFile(dst, os.O_WRONLY, 0)
	g.WriteAt([]byte{1}, 300<<20) // inside a hole of the source
	g.Close()
	if same, _ := SameFile(root.MustJoin("src"), root.MustJoin("dst")); same {
		t.Fatal("a changed copy is taken for complete")
	}
	if _, err := os.Stat(dst + ".partial"); !os.IsNotExist(err) {
		t.Fatal("temporary file left")
	}
}

// Finding 6: the root daemon copies in trees a VM owner's group may write.
// A link planted as the copy's temporary file, as its source or as a
// directory on the way is never followed: no victim is truncated or made
// readable, no secret lands in the backup.
func TestCopyNeverFollowsPlantedLinks(t *testing.T) {
	retain, backup, outside := t.TempDir(), t.TempDir(), t.TempDir()
	victim := filepath.Join(outside, "victim")
	secret := filepath.Join(outside, "secret")
	for _, f := range []string{victim, secret} {
		if err := os.WriteFile(f, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(retain, "vm.xml"), []byte("<domain/>"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The .partial of the copy is a link to the victim.
	if err := os.Symlink(victim, filepath.Join(backup, "vm.xml.L.partial")); err != nil {
		t.Fatal(err)
	}
	src, dst := hostio.In(retain).MustJoin("vm.xml"), hostio.In(backup).MustJoin("vm.xml.L")
	if _, err := CopyFile(context.Background(), nil, src, dst, 0o666, nil); err == nil {
		t.Error("a copy through a planted .partial link succeeded")
	}
	// The source is a link to a secret.
	if err := os.Symlink(secret, filepath.Join(retain, "vm.ldif")); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyFile(context.Background(), nil, hostio.In(retain).MustJoin("vm.ldif"), hostio.In(backup).MustJoin("vm.ldif.L"), 0o640, nil); err == nil {
		t.Error("a linked source was copied into the backup")
	}
	// A directory on the way is a link.
	if err := os.Symlink(outside, filepath.Join(backup, "sub")); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyFile(context.Background(), nil, src, hostio.In(backup).MustJoin("sub", "victim"), 0o666, nil); err == nil {
		t.Error("a copy through a linked directory succeeded")
	}
	for _, f := range []string{victim, secret} {
		b, err := os.ReadFile(f)
		fi, _ := os.Stat(f)
		if err != nil || string(b) != "keep me" || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s changed: %q, mode %v, %v", f, b, fi.Mode(), err)
		}
	}
	if _, err := os.Stat(filepath.Join(backup, "vm.ldif.L")); !os.IsNotExist(err) {
		t.Error("the secret reached the backup directory")
	}
}
