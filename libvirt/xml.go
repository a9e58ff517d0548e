package libvirt

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// domainDesc is what the workflow needs from a domain XML.
type domainDesc struct {
	Name      string
	MemoryKiB uint64
	VideoKiB  uint64            // video RAM, saved with the state
	Disks     []Disk            // file-backed device='disk' disks, in XML order
	Backing   map[string]string // target -> first backing file libvirt shows
	Other     []string          // device='disk' targets that are not plain files
}

// parseDomainXML reads a domain XML (live or inactive) with libvirtxml.
func parseDomainXML(s string) (domainDesc, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(s); err != nil {
		return domainDesc{}, fmt.Errorf("parse domain XML: %w", err)
	}
	d := domainDesc{Name: dom.Name, Backing: map[string]string{}}
	if dom.Memory != nil {
		d.MemoryKiB = toKiB(uint64(dom.Memory.Value), dom.Memory.Unit)
	}
	if dom.Devices == nil {
		return d, nil
	}
	for _, v := range dom.Devices.Videos {
		m := v.Model
		d.VideoKiB += uint64(m.Ram) + uint64(m.VRam) + uint64(m.VRam64) + uint64(m.VGAMem)
	}
	for _, disk := range dom.Devices.Disks {
		if disk.Device != "" && disk.Device != "disk" {
			continue // cdrom, floppy, lun: not backed up
		}
		target := ""
		if disk.Target != nil {
			target = disk.Target.Dev
		}
		if disk.Source == nil || disk.Source.File == nil || disk.Source.File.File == "" {
			d.Other = append(d.Other, target)
			continue
		}
		d.Disks = append(d.Disks, Disk{Target: target, Source: disk.Source.File.File})
		if bs := disk.BackingStore; bs != nil && bs.Source != nil && bs.Source.File != nil {
			d.Backing[target] = bs.Source.File.File
		}
	}
	return d, nil
}

func toKiB(v uint64, unit string) uint64 {
	switch strings.ToLower(unit) {
	case "b", "bytes":
		return v / 1024
	case "", "k", "kib":
		return v
	case "kb":
		return v * 1000 / 1024
	case "m", "mib":
		return v * 1024
	case "mb":
		return v * 1000 * 1000 / 1024
	case "g", "gib":
		return v * 1024 * 1024
	case "gb":
		return v * 1000 * 1000 * 1000 / 1024
	case "t", "tib":
		return v * 1024 * 1024 * 1024
	}
	return v
}

// stripBackingStore removes every <backingStore> child of the domain's
// <disk> elements and leaves every other byte of s as it was (re-marshalling
// through libvirtxml could drop what it does not know). An empty
// <backingStore/> tells libvirt "this image has no backing file": restoring
// with it after the overlay swap makes the guest read zeros. Without the
// element libvirt probes the chain from the image headers.
func stripBackingStore(s string) (string, error) {
	dec := xml.NewDecoder(strings.NewReader(s))
	var path []string
	var cuts [][2]int64
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("parse domain XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Local == "backingStore" && strings.Join(path, "/") == "domain/devices/disk" {
				if err := dec.Skip(); err != nil {
					return "", fmt.Errorf("parse domain XML: %w", err)
				}
				cuts = append(cuts, [2]int64{start, dec.InputOffset()})
				continue
			}
			path = append(path, t.Name.Local)
		case xml.EndElement:
			path = path[:len(path)-1]
		}
	}
	var b strings.Builder
	last := int64(0)
	for _, c := range cuts {
		from := c[0]
		// Take the element's own line with it, for a tidy file.
		for from > last && (s[from-1] == ' ' || s[from-1] == '\t') {
			from--
		}
		to := c[1]
		if from > 0 && s[from-1] == '\n' && to < int64(len(s)) && s[to] == '\n' {
			to++
		}
		b.WriteString(s[last:from])
		last = to
	}
	b.WriteString(s[last:])
	return b.String(), nil
}

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
