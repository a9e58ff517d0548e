package hostio

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A link planted below a root is never followed: not to write, not to
// chmod, not to remove what it points to, not to read.
func TestLinksBelowTheRootAreNeverFollowed(t *testing.T) {
	root := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(victim), filepath.Join(root, "dirlink")); err != nil {
		t.Fatal(err)
	}
	var s *Seam
	link := In(root).MustJoin("link")
	through := In(root).MustJoin("dirlink", "victim")
	if _, err := s.Create(link, 0o666); err == nil {
		t.Error("Create through a link succeeded")
	}
	if err := s.Chmod(link, 0o666); err == nil {
		t.Error("Chmod through a link succeeded")
	}
	if _, err := ReadFile(through); err == nil {
		t.Error("read through a linked directory succeeded")
	}
	if err := s.WriteFile(through, []byte("x"), 0o600); err == nil {
		t.Error("write through a linked directory succeeded")
	}
	if err := s.RemoveAll(In(root).MustJoin("dirlink")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(victim)
	fi, _ := os.Stat(victim)
	if err != nil || string(b) != "secret" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("victim changed: %q %v %v", b, fi.Mode(), err)
	}
	if _, err := Beneath(root, "/etc/passwd"); err == nil {
		t.Error("Beneath accepted a path outside the root")
	}
	if _, err := In(root).Join("..", "x"); err == nil {
		t.Error("Join climbed out of the root")
	}
}

func TestSeamFaults(t *testing.T) {
	root := In(t.TempDir())
	var ops []string
	s := &Seam{Trace: func(n int, op string) { ops = append(ops, op) }}
	s.Arm(Fault{Kind: FailWith, N: 2, Errno: syscall.ENOSPC})
	err := s.WriteFile(root.MustJoin("f"), []byte("data"), 0o640)
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, ErrInjected) {
		t.Fatalf("want an injected ENOSPC, got %v", err)
	}
	if Exists(root.MustJoin("f")) || Exists(root.MustJoin("f.tmp")) {
		t.Error("a failed WriteFile left a file")
	}
	var crashed []int
	s.Crash = func(op string, n int) { crashed = append(crashed, n) }
	s.Arm(Fault{Kind: CrashAfter, N: 4})
	if err := s.WriteFile(root.MustJoin("f"), []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	if len(crashed) != 1 || crashed[0] != 4 || s.Count() != 5 {
		t.Errorf("crash at %v after %d operations (%v)", crashed, s.Count(), ops)
	}
	// Picked: the fault lands on the op Pick names, whatever the armed N
	// says, and is of the kind Pick gives.
	crashed = nil
	s.Arm(Fault{Kind: CrashBefore, N: 99})
	s.Pick = func(n int, op string) Fault {
		if strings.HasPrefix(op, "rename") {
			return Fault{Kind: CrashBefore}
		}
		return Fault{}
	}
	if err := s.WriteFile(root.MustJoin("g"), []byte("data"), 0o640); err != nil {
		t.Fatal(err)
	}
	if len(crashed) != 1 || !strings.HasPrefix(ops[len(ops)-2], "rename") || crashed[0] != s.Count()-1 {
		t.Errorf("picked crash at %v of %d operations (%v)", crashed, s.Count(), ops)
	}
	s.Pick = func(n int, op string) Fault {
		if strings.HasPrefix(op, "write") {
			return Fault{Kind: FailWith, Errno: syscall.EIO}
		}
		return Fault{}
	}
	if err := s.WriteFile(root.MustJoin("h"), []byte("data"), 0o640); !errors.Is(err, syscall.EIO) {
		t.Errorf("a picked failure of the write: %v (%v)", err, ops)
	}
	for _, c := range []string{"crash-before:3", "crash-after:1", "fail:7:EIO", "fail:2:ENOSPC"} {
		f, err := ParseFault(c)
		if err != nil || f.String() != c {
			t.Errorf("%s: %v %v", c, f, err)
		}
	}
	if _, err := ParseFault("fail:0:EIO"); err == nil {
		t.Error("operation 0 accepted")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := Record{Path: In(t.TempDir()).MustJoin("journal", "vm", "leaf.json")}
	type st struct{ Phase string }
	var got st
	if ok, err := r.Load(&got); ok || err != nil {
		t.Fatalf("empty: %v %v", ok, err)
	}
	if err := r.Save(st{"saved"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Load(&got); !ok || err != nil || got.Phase != "saved" {
		t.Fatalf("%v %v %v", ok, err, got)
	}
	fi, _ := os.Stat(r.Path.String())
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v", fi.Mode())
	}
	if err := r.Remove(); err != nil || Exists(r.Path) {
		t.Fatal(err)
	}
}
