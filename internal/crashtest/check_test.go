package crashtest

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// settle is how long the invariants may take to hold once the leaf is
// finished: a node may still be tidying up or bringing a VM back.
const settle = 30 * time.Second

// vmProblems checks, from outside, that v runs (if it should) on its
// configured images and that no image has a backing file.
func (w *world) vmProblems(v *testVM) []string {
	var out []string
	info, err := w.hv.Domain(v.name)
	if err != nil {
		return []string{fmt.Sprintf("%s: libvirt: %v", v.name, err)}
	}
	if info.Running != v.running {
		out = append(out, fmt.Sprintf("%s is %s, want running=%v", v.name, info.State, v.running))
	}
	if info.State == "paused" {
		out = append(out, fmt.Sprintf("%s is paused", v.name))
	}
	want := map[string]string{}
	for _, d := range v.disks {
		want[d.Target] = d.Path
	}
	for _, d := range info.Disks {
		if p, ok := want[d.Target]; ok && p != d.Source {
			out = append(out, fmt.Sprintf("%s %s runs on %s, want %s", v.name, d.Target, d.Source, p))
		}
		delete(want, d.Target)
	}
	for t := range want {
		out = append(out, fmt.Sprintf("%s has no disk %s", v.name, t))
	}
	for _, d := range v.disks {
		chain, err := format.ImageChain(context.Background(), d.Path)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", d.Path, err))
			continue
		}
		for _, im := range chain {
			if im.BackingFile != "" {
				where := ""
				if inside(im.BackingFile, w.retain) {
					where = " (in the retain directory)"
				}
				out = append(out, fmt.Sprintf("%s has backing file %s%s", filepath.Base(im.Filename), im.BackingFile, where))
			}
		}
	}
	return out
}

// guestProblems asks the running guest's own block devices for its data.
func (w *world) guestProblems(v *testVM) []string {
	if !v.running {
		return nil
	}
	var out []string
	for _, d := range v.disks {
		p := v.reads[d.Target]
		if err := testenv.VerifyGuestPattern(w.lv.URI, w.lv.LogDir, v.name, d.Target, p, testenv.PatternOffset, testenv.PatternLength); err != nil {
			out = append(out, fmt.Sprintf("guest of %s does not read 0x%02x on %s: %v", v.name, p, d.Target, err))
		}
	}
	return out
}

// backupProblems checks a successful backup's files: all there, the state a
// complete save image, each image standing alone and equal to the disk as
// created.
func (w *world) backupProblems(v *testVM, leaf string) []string {
	dir := filepath.Join(w.backup, "vm-persistent", "pool-a", v.name, leaf)
	var out []string
	names := []string{v.name + ".state." + leaf, v.name + ".xml." + leaf, v.name + ".ldif." + leaf}
	for _, d := range v.disks {
		names = append(names, filepath.Base(d.Path)+"."+leaf)
	}
	for _, n := range names {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil || st.Size() == 0 {
			out = append(out, fmt.Sprintf("backup file %s missing or empty", n))
		}
	}
	if len(out) > 0 {
		return out
	}
	if state := filepath.Join(dir, names[0]); v.running && !format.IsSaveImage(state) {
		out = append(out, fmt.Sprintf("backup state %s is not a complete save image", names[0]))
	}
	for _, d := range v.disks {
		img := filepath.Join(dir, filepath.Base(d.Path)+"."+leaf)
		if info, err := format.ImageInfo(context.Background(), img); err != nil {
			out = append(out, fmt.Sprintf("%s: %v", filepath.Base(img), err))
		} else if info.BackingFile != "" {
			out = append(out, fmt.Sprintf("backed-up image %s has backing file %s", filepath.Base(img), info.BackingFile))
		}
		eq, err := format.CompareImages(context.Background(), v.saved[d.Path], img)
		if err != nil || !eq {
			out = append(out, fmt.Sprintf("backed-up image %s differs from the disk as it was (err %v)", filepath.Base(img), err))
		}
	}
	return out
}

// listing is a directory's files with size and modification time, to show
// that a restore did not touch the backup it read.
func listing(dir string) string {
	es, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range es {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s %d %s\n", e.Name(), fi.Size(), fi.ModTime().Format(time.RFC3339Nano))
	}
	return b.String()
}

// leftovers scans the configured directories. Files of abandoned VMs are
// left out (their point already failed); only is nil for every VM, or the
// one VM a point is about.
func (w *world) leftovers(only *testVM) []string {
	var out []string
	vms := w.allVMs()
	owner := func(name string, sep string) (*testVM, bool) {
		for _, v := range vms {
			if strings.HasPrefix(name, v.name+sep) || name == v.name {
				return v, true
			}
		}
		return nil, false
	}
	relevant := func(v *testVM, found bool) bool {
		if !found {
			return only == nil
		}
		if v.abandoned {
			return false
		}
		return only == nil || only == v
	}

	// Retain: nothing once the leaf is finished, not even an empty leaf directory.
	base := filepath.Join(w.retain, "vm-persistent", "pool-a")
	_ = filepath.WalkDir(w.retain, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == w.retain {
			return nil
		}
		rel, _ := filepath.Rel(base, p)
		parts := strings.Split(rel, string(filepath.Separator))
		if strings.HasPrefix(rel, "..") || len(parts) < 1 {
			if !d.IsDir() && only == nil {
				out = append(out, "retain: stray "+p)
			}
			return nil
		}
		v, found := owner(parts[0], "\x00")
		if !relevant(v, found) {
			return nil
		}
		switch {
		case d.IsDir() && len(parts) == 2:
			out = append(out, fmt.Sprintf("retain: leaf directory %s left (%d file(s))", rel, countFiles(p)))
			return filepath.SkipDir
		case !d.IsDir():
			out = append(out, "retain: file "+rel)
		}
		return nil
	})

	// RAM disk: no state file once nothing runs.
	if es, err := os.ReadDir(w.ramdisk); err == nil {
		for _, e := range es {
			v, found := owner(e.Name(), ".")
			if relevant(v, found) {
				out = append(out, "RAM disk: "+e.Name())
			}
		}
	}

	// Images: a VM's disks, its boot floppy and serial log; nothing else.
	if es, err := os.ReadDir(w.images); err == nil {
		for _, e := range es {
			v, found := owner(e.Name(), "-")
			if !relevant(v, found) {
				continue
			}
			if !found || !expectedImageFile(v, e.Name()) {
				out = append(out, "images: "+e.Name())
			}
		}
	}

	// Backup: no half-written copy anywhere. The chunk store may hold the
	// temporary files of a crashed writer: its garbage collection removes them.
	chunks := filepath.Join(w.backup, format.ChunkStoreDir)
	_ = filepath.WalkDir(w.backup, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return nil
		case p == chunks:
			return filepath.SkipDir
		case d.IsDir():
			return nil
		}
		n := d.Name()
		if strings.HasSuffix(n, ".partial") || strings.HasSuffix(n, ".tmp") || strings.Contains(n, ".pre-restore") {
			rel, _ := filepath.Rel(w.backup, p)
			parts := strings.Split(rel, string(filepath.Separator))
			if len(parts) > 2 {
				if v, found := owner(parts[2], "\x00"); !relevant(v, found) {
					return nil
				}
			}
			out = append(out, "backup: "+rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func expectedImageFile(v *testVM, name string) bool {
	if name == v.name+"-boot.img" || name == v.name+"-serial.log" {
		return true
	}
	for _, d := range v.disks {
		if name == filepath.Base(d.Path) {
			return true
		}
	}
	return false
}

func countFiles(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

func inside(path, dir string) bool {
	p := filepath.Clean(path)
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}

// settled polls check until it finds nothing or limit has passed, and
// returns the last findings with how long it took.
func settled(limit time.Duration, check func() []string) ([]string, time.Duration) {
	start := time.Now()
	for {
		found := check()
		if len(found) == 0 || time.Since(start) >= limit {
			return found, time.Since(start)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
