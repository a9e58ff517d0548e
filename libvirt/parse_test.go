package libvirt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	lv "libvirt.org/go/libvirt"
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
		d, err := parseDomainXML(readTestdata(t, tc.file))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		// The boot floppy is not a backup disk.
		want := []Disk{{Target: "vda", Source: "/srv/images/s1.qcow2"}}
		if fmt.Sprint(d.Disks) != fmt.Sprint(want) || len(d.Other) != 0 {
			t.Errorf("%s: disks %v other %v, want %v", tc.file, d.Disks, d.Other, want)
		}
		if d.Name != "s1" || d.MemoryKiB != 128*1024 {
			t.Errorf("%s: name %q memory %d KiB", tc.file, d.Name, d.MemoryKiB)
		}
		if d.Backing["vda"] != tc.backing {
			t.Errorf("%s: backing %q, want %q", tc.file, d.Backing["vda"], tc.backing)
		}
	}
	if _, err := parseDomainXML("<domain"); err == nil {
		t.Error("broken XML parsed")
	}
}

func TestParseDomainXMLOtherDisks(t *testing.T) {
	x := `<domain type='kvm'><name>n</name><memory unit='GiB'>2</memory><devices>
<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb'/></disk>
<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdc'/></disk>
<disk type='file'><source file='/img/a.qcow2'/><target dev='vda'/></disk>
<video><model type='qxl' ram='65536' vram='65536' vgamem='16384'/></video>
</devices></domain>`
	d, err := parseDomainXML(x)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Disks) != 1 || d.Disks[0].Source != "/img/a.qcow2" || fmt.Sprint(d.Other) != "[vdb]" {
		t.Errorf("disks %v other %v", d.Disks, d.Other)
	}
	if d.MemoryKiB != 2<<20 || d.VideoKiB != 65536*2+16384 {
		t.Errorf("memory %d video %d", d.MemoryKiB, d.VideoKiB)
	}
}

func TestStripBackingStore(t *testing.T) {
	for _, file := range []string{"running-plain.xml", "running-overlay.xml", "running-migratable.xml"} {
		in := readTestdata(t, file)
		out, err := stripBackingStore(in)
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
		d1, _ := parseDomainXML(in)
		d2, err := parseDomainXML(out)
		if err != nil || fmt.Sprint(d1.Disks) != fmt.Sprint(d2.Disks) {
			t.Errorf("%s: disks changed: %v -> %v (%v)", file, d1.Disks, d2.Disks, err)
		}
		again, _ := stripBackingStore(out)
		if again != out {
			t.Errorf("%s: not idempotent", file)
		}
	}
	// Only a disk's own backingStore goes; a namespaced element of the
	// same name elsewhere stays.
	x := `<domain xmlns:q="urn:x"><devices><disk><backingStore/></disk></devices><q:backingStore/></domain>`
	out, err := stripBackingStore(x)
	if err != nil || out != `<domain xmlns:q="urn:x"><devices><disk></disk></devices><q:backingStore/></domain>` {
		t.Errorf("got %q, %v", out, err)
	}
}

func TestSameDisks(t *testing.T) {
	have := []Disk{{"vda", "/img/a.qcow2"}, {"vdb", "/img/b.qcow2"}}
	if err := sameDisks([]Disk{{"vdb", "/img//b.qcow2"}, {"vda", "/img/a.qcow2"}}, have); err != nil {
		t.Error(err)
	}
	for _, want := range [][]Disk{
		{{"vda", "/img/a.qcow2"}},
		{{"vda", "/img/a.qcow2"}, {"vdb", "/img/c.qcow2"}},
		{{"vda", "/img/a.qcow2"}, {"vdc", "/img/b.qcow2"}},
	} {
		if err := sameDisks(want, have); !errors.Is(err, ErrDiskMismatch) {
			t.Errorf("%v: %v", want, err)
		}
	}
}

func TestParseImageInfo(t *testing.T) {
	im, err := parseImageInfo([]byte(readTestdata(t, "info-overlay.json")))
	if err != nil {
		t.Fatal(err)
	}
	if im.Format != "qcow2" || im.VirtualSize != 64<<20 || im.BackingFile != "/srv/retain/s1.qcow2" ||
		im.BackingFormat != "qcow2" || im.Filename != "/srv/images/s1.qcow2" || im.Corrupt {
		t.Errorf("%+v", im)
	}
	chain, err := parseImageChain([]byte(readTestdata(t, "info-overlay-chain.json")))
	if err != nil || len(chain) != 2 || chain[1].Filename != "/srv/retain/s1.qcow2" || chain[1].BackingFile != "" {
		t.Errorf("%+v %v", chain, err)
	}
	chain, err = parseImageChain([]byte(readTestdata(t, "info-merged-chain.json")))
	if err != nil || len(chain) != 1 || chain[0].BackingFile != "" {
		t.Errorf("%+v %v", chain, err)
	}
	for _, bad := range []string{"", "{}", "qemu-img: Could not open", "[]"} {
		if _, err := parseImageInfo([]byte(bad)); err == nil {
			t.Errorf("parseImageInfo(%q) succeeded", bad)
		}
		if _, err := parseImageChain([]byte(bad)); err == nil {
			t.Errorf("parseImageChain(%q) succeeded", bad)
		}
	}
}

func TestParseCheck(t *testing.T) {
	c, err := parseCheck([]byte(readTestdata(t, "check-ok.json")))
	if err != nil || c.Corruptions != 0 || c.CheckErrors != 0 || c.Format != "qcow2" {
		t.Errorf("%+v %v", c, err)
	}
	c, err = parseCheck([]byte(readTestdata(t, "check-corrupt.json")))
	if err != nil || c.Corruptions != 12 {
		t.Errorf("%+v %v", c, err)
	}
	if _, err := parseCheck([]byte("{}")); err == nil {
		t.Error("empty check parsed")
	}
}

func TestIsTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{lv.Error{Code: lv.ERR_NO_CONNECT}, true},
		{lv.Error{Code: lv.ERR_RPC, Domain: lv.FROM_RPC}, true},
		{lv.Error{Code: lv.ERR_SYSTEM_ERROR, Domain: lv.FROM_RPC}, true},
		{lv.Error{Code: lv.ERR_INTERNAL_ERROR, Domain: lv.FROM_RPC}, true},
		{lv.Error{Code: lv.ERR_SYSTEM_ERROR, Domain: lv.FROM_QEMU}, false},
		{lv.Error{Code: lv.ERR_NO_DOMAIN}, false},
		{fmt.Errorf("%w: x: %w", ErrSaveFailed, lv.Error{Code: lv.ERR_INVALID_CONN}), true},
		{wrap(ErrConnection, errors.New("refused"), "uri"), true},
		{ErrNoSpace, false},
	} {
		if got := IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v", tc.err, got)
		}
	}
	err := wrap(ErrSaveFailed, lv.Error{Code: lv.ERR_OPERATION_FAILED}, "vm")
	var le lv.Error
	if !errors.Is(err, ErrSaveFailed) || !errors.As(err, &le) {
		t.Errorf("%v does not carry both its class and its cause", err)
	}
}

func TestSaveImageMagic(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"full":        "LibvirtQemudSave\x00\x00rest",
		"partial":     "LibvirtQemudPart\x00\x00rest",
		"placeholder": statePlaceholder,
		"short":       "Libvirt",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := isSaveImage(p); got != (name == "full") {
			t.Errorf("%s: isSaveImage = %v", name, got)
		}
	}
	if isSaveImage(filepath.Join(dir, "none")) {
		t.Error("missing file is a save image")
	}
}
