package format

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseDomainXML(t *testing.T) {
	for _, tc := range []struct {
		file    string
		backing string
	}{
		{"running-plain.xml", ""},
		{"running-overlay.xml", "/srv/retain/s1.qcow2"},
		{"running-merged.xml", ""},
		{"shutoff.xml", ""},
		{"saveimage.xml", ""},
	} {
		d, err := ParseDomainXML(readTestdata(t, tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		// The boot floppy is not a backup disk.
		want := []Disk{{Target: "vda", Source: "/srv/images/s1.qcow2"}}
		if fmt.Sprint(d.Disks) != fmt.Sprint(want) || len(d.Other) != 0 {
			t.Errorf("%s: disks %v other %v, want %v", tc.file, d.Disks, d.Other, want)
		}
		if d.Name != "s1" || d.MemoryKiB != 128*1024 || d.VCPUs != 1 {
			t.Errorf("%s: name %q memory %d KiB", tc.file, d.Name, d.MemoryKiB)
		}
		if d.Formats["vda"] != "qcow2" || d.CheckName("s1") != nil || d.CheckName("s2") == nil {
			t.Errorf("%s: formats %v, name %q", tc.file, d.Formats, d.Name)
		}
		if d.Backing["vda"] != tc.backing {
			t.Errorf("%s: backing %q, want %q", tc.file, d.Backing["vda"], tc.backing)
		}
	}
	if _, err := ParseDomainXML("<domain"); err == nil {
		t.Error("broken XML parsed")
	}
}

func TestParseDomainXMLOtherDisks(t *testing.T) {
	x := `<domain type='kvm'><name>n</name><memory unit='GiB'>2</memory><devices>
<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb'/></disk>
<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdc'/></disk>
<disk type='file'><driver name='qemu' type='raw'/><source file='/img/a.qcow2'/><target dev='vda'/></disk>
<video><model type='qxl' ram='65536' vram='65536' vgamem='16384'/></video>
</devices></domain>`
	d, err := ParseDomainXML(x)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Disks) != 1 || d.Disks[0].Source != "/img/a.qcow2" || fmt.Sprint(d.Other) != "[vdb]" {
		t.Errorf("disks %v other %v", d.Disks, d.Other)
	}
	if d.Formats["vda"] != "raw" || len(d.Formats) != 1 {
		t.Errorf("formats %v", d.Formats)
	}
	if d.MemoryKiB != 2<<20 || d.VideoKiB != 65536*2+16384 {
		t.Errorf("memory %d video %d", d.MemoryKiB, d.VideoKiB)
	}
}

func TestStripBackingStore(t *testing.T) {
	for _, file := range []string{"running-plain.xml", "running-overlay.xml", "running-migratable.xml"} {
		in := readTestdata(t, file)
		out, err := StripBackingStore(in)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "backingStore") {
			t.Errorf("%s: backingStore left:\n%s", file, out)
		}
		// Everything else is kept byte for byte.
		var kept []string
		for _, l := range strings.Split(in, "\n") {
			if !strings.Contains(l, "backingStore") {
				kept = append(kept, l)
			}
		}
		if file == "running-overlay.xml" {
			kept = nil // the nested chain spans several lines
			skip := 0
			for _, l := range strings.Split(in, "\n") {
				switch {
				case strings.Contains(l, "<backingStore type="):
					skip++
				case skip > 0 && strings.Contains(l, "</backingStore>"):
					skip--
				case skip == 0 && !strings.Contains(l, "backingStore"):
					kept = append(kept, l)
				}
			}
		}
		if out != strings.Join(kept, "\n") {
			t.Errorf("%s: more than backingStore changed:\n%s", file, out)
		}
		d1, _ := ParseDomainXML(in)
		d2, err := ParseDomainXML(out)
		if err != nil || fmt.Sprint(d1.Disks) != fmt.Sprint(d2.Disks) {
			t.Errorf("%s: disks changed: %v -> %v (%v)", file, d1.Disks, d2.Disks, err)
		}
		again, _ := StripBackingStore(out)
		if again != out {
			t.Errorf("%s: not idempotent", file)
		}
	}
	// Only a disk's own backingStore goes; a namespaced element of the
	// same name elsewhere stays.
	x := `<domain xmlns:q="urn:x"><devices><disk><backingStore/></disk></devices><q:backingStore/></domain>`
	out, err := StripBackingStore(x)
	if err != nil || out != `<domain xmlns:q="urn:x"><devices><disk></disk></devices><q:backingStore/></domain>` {
		t.Errorf("got %q, %v", out, err)
	}
}
