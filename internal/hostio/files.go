package hostio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// resolveFlags: beneath the root, and no symlink (or /proc magic link) on
// the way, whatever its target.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openAt opens p.Rel beneath p.Root with openat2.
func openAt(p Path, flags int, perm uint32) (int, error) {
	root, err := unix.Open(p.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: p.Root, Err: err}
	}
	defer unix.Close(root)
	if p.Rel == "." && flags&unix.O_CREAT == 0 {
		return unix.Openat2(root, ".", &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(perm), Resolve: resolveFlags})
	}
	fd, err := unix.Openat2(root, p.Rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Mode: uint64(perm), Resolve: resolveFlags})
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: p.String(), Err: err}
	}
	return fd, nil
}

// parent opens the directory that holds p, for the *at calls on its base.
func parent(p Path) (int, string, error) {
	if p.Rel == "." {
		return -1, "", fmt.Errorf("%s: the root itself cannot be changed", p)
	}
	fd, err := openAt(p.Dir(), unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, filepath.Base(p.Rel), err
}

func pathErr(op string, p Path, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: op, Path: p.String(), Err: err}
}

// Lstat describes p itself (a symlink is reported as one, not followed).
func Lstat(p Path) (os.FileInfo, error) {
	if p.Rel == "." {
		return os.Lstat(p.Root)
	}
	d, base, err := parent(p)
	if err != nil {
		return nil, err
	}
	defer unix.Close(d)
	// Through the resolved directory: nothing on the way is followed.
	fi, err := os.Lstat(fmt.Sprintf("/proc/self/fd/%d/%s", d, base))
	return fi, pathErr("lstat", p, unwrapPath(err))
}

// Exists: p is there (as anything, a symlink included).
func Exists(p Path) bool {
	_, err := Lstat(p)
	return err == nil
}

// IsRegular: p is a regular file, not a link to one.
func IsRegular(p Path) bool {
	fi, err := Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

// Open opens a regular file for reading without following a link.
func Open(p Path) (*os.File, error) {
	fd, err := openAt(p, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p.String())
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: p.String(), Err: errors.New("not a regular file")}
	}
	return f, nil
}

// ReadFile reads a regular file without following a link.
func ReadFile(p Path) ([]byte, error) {
	f, err := Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, fi.Size())
	n, err := f.ReadAt(b, 0)
	if n == len(b) {
		err = nil
	}
	return b[:n], err
}

// CheckPath makes sure nothing below the root on the way to p is a symlink
// before p is handed to a program (qemu-img, libvirt) that opens it itself.
func CheckPath(p Path) error {
	fd, err := openAt(p, unix.O_PATH, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			// p itself may be created by the program: its directory must be sound.
			fd, err = openAt(p.Dir(), unix.O_PATH|unix.O_DIRECTORY, 0)
			if err != nil {
				return err
			}
			unix.Close(fd)
			return nil
		}
		return err
	}
	unix.Close(fd)
	return nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
