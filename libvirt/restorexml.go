package libvirt

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"

	"github.com/stoneycloud/stoney-conductor/internal/format"
)

// checkSavedXML decides whether a domain XML saved with a backup may be
// defined by the root daemon. The file lies in a directory the vm-storage
// group may write, so it is held to what the directory and the host say:
//   - it names the VM;
//   - its device='disk' disks are exactly the directory's disk entries
//     (disks), all plain files;
//   - it has no device that hands host resources to the guest (<filesystem>,
//     <hostdev>, <redirdev>, <smartcard>, <shmem>) and no element of another
//     namespace outside <metadata> (qemu:commandline and the like);
//   - every other host path it names (emulator, boot media, serial logs,
//     loader, scripts...) lies in a storage directory of the VM's disks, or
//     below /usr or /dev/pts, or is one the current definition (current, ""
//     if the VM is not defined) already uses.
//
// Any other XML is refused with ErrDiskMismatch before anything is touched.
func checkSavedXML(x, domain string, disks []Disk, current string) error {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: saved XML refused: %s", ErrDiskMismatch, fmt.Sprintf(format, args...))
	}
	desc, err := format.ParseDomainXML(x)
	if err != nil {
		return refuse("%v", err)
	}
	if err := desc.CheckName(domain); err != nil {
		return refuse("%v", err)
	}
	if len(desc.Other) > 0 {
		return refuse("disks %v are not plain files", desc.Other)
	}
	if err := sameDisks(disks, desc.Disks); err != nil {
		return refuse("%v", err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(x); err != nil {
		return refuse("%v", err)
	}
	if dv := dom.Devices; dv != nil {
		for what, n := range map[string]int{"filesystem": len(dv.Filesystems), "hostdev": len(dv.Hostdevs),
			"redirdev": len(dv.RedirDevs), "smartcard": len(dv.Smartcards), "shmem": len(dv.Shmems)} {
			if n > 0 {
				return refuse("it has a <%s> device", what)
			}
		}
		for _, d := range dv.Disks {
			if d.Source == nil {
				continue
			}
			if s := d.Source; s.Block != nil || s.Dir != nil || s.Volume != nil || s.NVME != nil || s.VHostUser != nil {
				return refuse("disk %s is not backed by a file", targetOf(d))
			}
			if f := d.Source.File; f != nil && f.File != "" && !filepath.IsAbs(f.File) {
				return refuse("disk %s names the relative path %q", targetOf(d), f.File)
			}
		}
	}
	paths, err := hostPaths(x)
	if err != nil {
		return refuse("%v", err)
	}
	allowed := map[string]bool{}
	if current != "" {
		known, err := hostPaths(current)
		if err != nil {
			return refuse("current definition: %v", err)
		}
		for _, p := range known {
			allowed[p] = true
		}
	}
	var dirs []string
	for _, d := range disks {
		dirs = append(dirs, filepath.Dir(filepath.Clean(d.Source)))
	}
	for _, p := range paths {
		// /dev/pts: a pty's path, which libvirt allocates anew (type='pty').
		if allowed[p] || beneath(p, "/usr") || beneath(p, "/dev/pts") {
			continue
		}
		inStorage := false
		for _, dir := range dirs {
			inStorage = inStorage || beneath(p, dir)
		}
		if !inStorage {
			return refuse("it names %s, outside the VM's storage directory and unknown to its current definition", p)
		}
	}
	return nil
}

func targetOf(d libvirtxml.DomainDisk) string {
	if d.Target != nil {
		return d.Target.Dev
	}
	return "(no target)"
}

func beneath(p, dir string) bool {
	p, dir = filepath.Clean(p), filepath.Clean(dir)
	return strings.HasPrefix(p, dir+"/")
}

// hostPaths lists every absolute path a domain XML names in an attribute or
// as text, outside <metadata>, <description>, <title> and <partition>; an element of a
// foreign namespace (qemu:commandline...) outside <metadata> is an error.
func hostPaths(x string) ([]string, error) {
	dec := xml.NewDecoder(strings.NewReader(x))
	var out []string
	free := 0 // depth inside <metadata>, <description>, <title>, <partition>
	add := func(v string) {
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, "/") {
			out = append(out, filepath.Clean(v))
		}
	}
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if free > 0 {
				free++
				continue
			}
			switch t.Name.Local {
			case "metadata", "description", "title", "partition": // partition: a cgroup, not a file
				free = 1
				continue
			}
			if t.Name.Space != "" {
				return nil, fmt.Errorf("element <%s> of namespace %s", t.Name.Local, t.Name.Space)
			}
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					continue
				}
				add(a.Value)
			}
		case xml.EndElement:
			if free > 0 {
				free--
			}
		case xml.CharData:
			if free == 0 {
				add(string(t))
			}
		}
	}
}
