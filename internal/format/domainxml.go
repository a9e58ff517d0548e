package format

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// Disk is one disk image of a VM: its device and its file.
type Disk struct {
	Target string // vda
	Source string // image path
}

// Domain is what a backup needs from a domain XML.
type Domain struct {
	Name      string
	MemoryKiB uint64
	VCPUs     int
	VideoKiB  uint64            // video RAM, saved with the state
	Disks     []Disk            // file-backed device='disk' disks, in XML order: the ones backed up
	Formats   map[string]string // target -> the driver's image format, where the XML says
	Backing   map[string]string // target -> first backing file libvirt shows
	Other     []string          // device='disk' targets that are not plain files
}

// ParseDomainXML reads a domain XML (live, inactive or saved with a backup).
func ParseDomainXML(s string) (Domain, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(s); err != nil {
		return Domain{}, fmt.Errorf("parse domain XML: %w", err)
	}
	d := Domain{Name: dom.Name, Formats: map[string]string{}, Backing: map[string]string{}}
	if dom.Memory != nil {
		d.MemoryKiB = toKiB(uint64(dom.Memory.Value), dom.Memory.Unit)
	}
	if dom.VCPU != nil {
		d.VCPUs = int(dom.VCPU.Value)
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
		if disk.Driver != nil && disk.Driver.Type != "" {
			d.Formats[target] = disk.Driver.Type
		}
		if bs := disk.BackingStore; bs != nil && bs.Source != nil && bs.Source.File != nil {
			d.Backing[target] = bs.Source.File.File
		}
	}
	return d, nil
}

// CheckName refuses the XML of another domain than vm.
func (d Domain) CheckName(vm string) error {
	if d.Name != vm {
		return fmt.Errorf("names domain %q, not %q", d.Name, vm)
	}
	return nil
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

// StripBackingStore removes every <backingStore> child of the domain's
// <disk> elements and leaves every other byte of s as it was (re-marshalling
// through libvirtxml could drop what it does not know): the XML a backup
// saves has none. An empty <backingStore/> tells libvirt "this image has no
// backing file": restoring with it after the overlay swap makes the guest
// read zeros. Without the element libvirt probes the chain from the image
// headers.
func StripBackingStore(s string) (string, error) {
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
