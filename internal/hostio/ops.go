package hostio

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// The operations that change the host. Each is one point of the seam,
// named after what it does and to which file, and none follows a link.

// Rename renames from to to (both beneath their roots; one filesystem).
func (s *Seam) Rename(from, to Path) error { return s.rename(from, to, 0) }

// RenameNoReplace renames from to to and fails with EEXIST if to exists.
func (s *Seam) RenameNoReplace(from, to Path) error {
	return s.rename(from, to, unix.RENAME_NOREPLACE)
}

func (s *Seam) rename(from, to Path, flags uint) error {
	return s.Do("rename "+from.Base()+" to "+to.String(), func() error {
		fd, fb, err := parent(from)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		td, tb, err := parent(to)
		if err != nil {
			return err
		}
		defer unix.Close(td)
		if err := unix.Renameat2(fd, fb, td, tb, flags); err != nil {
			return &os.LinkError{Op: "rename", Old: from.String(), New: to.String(), Err: err}
		}
		return nil
	})
}

// Remove removes a file or an empty directory; a missing one is no error.
func (s *Seam) Remove(p Path) error {
	if !Exists(p) {
		return nil
	}
	return s.Do("remove "+p.String(), func() error { return removeAt(p) })
}

func removeAt(p Path) error {
	d, base, err := parent(p)
	if err != nil {
		return err
	}
	defer unix.Close(d)
	err = unix.Unlinkat(d, base, 0)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EPERM) {
		err = unix.Unlinkat(d, base, unix.AT_REMOVEDIR)
	}
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return pathErr("remove", p, err)
}

// RemoveAll removes p and everything below it, without following links
// (a link is removed, never what it points to).
func (s *Seam) RemoveAll(p Path) error {
	if !Exists(p) {
		return nil
	}
	return s.Do("remove all of "+p.String(), func() error { return removeAll(p) })
}

func removeAll(p Path) error {
	fi, err := Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		fd, err := openAt(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		dir := os.NewFile(uintptr(fd), p.String())
		names, err := dir.Readdirnames(-1)
		dir.Close()
		if err != nil {
			return err
		}
		for _, n := range names {
			c, err := p.Join(n)
			if err != nil {
				return err
			}
			if err := removeAll(c); err != nil {
				return err
			}
		}
	}
	return removeAt(p)
}

// Mkdir creates one directory; an existing directory is no error.
func (s *Seam) Mkdir(p Path, perm os.FileMode) error {
	if fi, err := Lstat(p); err == nil {
		if fi.IsDir() {
			return nil
		}
		return &os.PathError{Op: "mkdir", Path: p.String(), Err: unix.ENOTDIR}
	}
	return s.Do("mkdir "+p.String(), func() error {
		d, base, err := parent(p)
		if err != nil {
			return err
		}
		defer unix.Close(d)
		err = unix.Mkdirat(d, base, uint32(perm.Perm()))
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return pathErr("mkdir", p, err)
	})
}

// MkdirAll creates p and its missing parents below the root, each with
// perm, and returns the directories it created (to set their owner).
func (s *Seam) MkdirAll(p Path, perm os.FileMode) ([]Path, error) {
	var missing []Path
	for q := p; q.Rel != "."; q = q.Dir() {
		if Exists(q) {
			break
		}
		missing = append([]Path{q}, missing...)
	}
	for _, q := range missing {
		if err := s.Mkdir(q, perm); err != nil {
			return missing, err
		}
	}
	if fi, err := Lstat(p); err != nil || !fi.IsDir() {
		return missing, &os.PathError{Op: "mkdir", Path: p.String(), Err: unix.ENOTDIR}
	}
	return missing, nil
}

// withFile opens p itself (never a link) to change its attributes.
func withFile(p Path, f func(*os.File) error) error {
	fd, err := openAt(p, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	file := os.NewFile(uintptr(fd), p.String())
	defer file.Close()
	return f(file)
}

// Chmod sets p's permission bits.
func (s *Seam) Chmod(p Path, perm os.FileMode) error {
	return s.Do(fmt.Sprintf("chmod %o %s", perm.Perm(), p), func() error {
		return withFile(p, func(f *os.File) error { return f.Chmod(perm) })
	})
}

// Chown sets p's owner and group (-1 keeps one).
func (s *Seam) Chown(p Path, uid, gid int) error {
	if uid == -1 && gid == -1 {
		return nil
	}
	return s.Do(fmt.Sprintf("chown %d:%d %s", uid, gid, p), func() error {
		return withFile(p, func(f *os.File) error { return f.Chown(uid, gid) })
	})
}

// Create creates p for writing, truncating a regular file that is there;
// a link or anything else at p is refused.
func (s *Seam) Create(p Path, perm os.FileMode) (*os.File, error) {
	var f *os.File
	err := s.Do("create "+p.String(), func() error {
		fd, err := openAt(p, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC, uint32(perm.Perm()))
		if err != nil {
			return err
		}
		f = os.NewFile(uintptr(fd), p.String())
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return &os.PathError{Op: "create", Path: p.String(), Err: errors.New("not a regular file")}
		}
		// The mode asked for, whatever the umask.
		if err := f.Chmod(perm); err != nil {
			f.Close()
			return err
		}
		return nil
	})
	return f, err
}

// Write writes b at off of f (one point: a disk that fails mid-copy).
func (s *Seam) Write(f *os.File, b []byte, off int64) error {
	return s.Do("write "+f.Name(), func() error {
		// In pieces: one 4 MiB pwrite went into ext4's page cache six to ten
		// times slower than four of 1 MiB (Linux 6.1, measured).
		for len(b) > 0 {
			n := min(len(b), writePiece)
			if _, err := f.WriteAt(b[:n], off); err != nil {
				return err
			}
			b, off = b[n:], off+int64(n)
		}
		return nil
	})
}

const writePiece = 1 << 20

// Sync makes f's data durable.
func (s *Seam) Sync(f *os.File) error {
	return s.Do("fsync "+f.Name(), f.Sync)
}

// SyncDir makes the entries of directory p (renames, creates) durable.
func (s *Seam) SyncDir(p Path) error {
	return s.Do("fsync dir "+p.String(), func() error {
		fd, err := openAt(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fsync(fd)
	})
}

// WriteFile writes data to p whole or not at all: a temporary file beside
// it, fsynced, renamed over p, and the directory fsynced.
func (s *Seam) WriteFile(p Path, data []byte, perm os.FileMode) error {
	tmp := p.Dir().MustJoin(p.Base() + ".tmp")
	f, err := s.Create(tmp, perm)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			_ = removeAt(tmp)
		}
	}()
	if err := s.Write(f, data, 0); err != nil {
		return err
	}
	if err := s.Sync(f); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	ok = true
	if err := s.Rename(tmp, p); err != nil {
		_ = removeAt(tmp)
		return err
	}
	return s.SyncDir(p.Dir())
}

// CopyTo is io.Copy from r into a new file at p, fsynced (used for files
// moved between filesystems).
func (s *Seam) CopyTo(p Path, r io.Reader, perm os.FileMode) error {
	f, err := s.Create(p, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := s.Write(f, buf[:n], off); err != nil {
				return err
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	return s.Sync(f)
}
