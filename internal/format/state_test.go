package format

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSaveImageMagic(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"full":        "LibvirtQemudSave\x00\x00rest",
		"partial":     "LibvirtQemudPart\x00\x00rest",
		"placeholder": Placeholder,
		"short":       "Libvirt",
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := IsSaveImage(p); got != (name == "full") {
			t.Errorf("%s: IsSaveImage = %v", name, got)
		}
	}
	if IsSaveImage(filepath.Join(dir, "none")) {
		t.Error("missing file is a save image")
	}
	if err := os.Symlink(filepath.Join(dir, "full"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if IsSaveImage(filepath.Join(dir, "link")) {
		t.Error("a link to a save image is followed")
	}
}

// ReadState: both forms of the placeholder, a whole save image, and every
// way one can be cut short or be something else.
func TestReadState(t *testing.T) {
	xml := []byte("<domain><name>vm</name></domain>\x00")
	h := make([]byte, saveHeader)
	copy(h, saveMagic)
	binary.LittleEndian.PutUint32(h[16:], 2)
	binary.LittleEndian.PutUint32(h[20:], uint32(len(xml)))
	image := append(append(append(h, xml...), qemuStream...), make([]byte, 4096)...)
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content string
		want          StateKind
		err           string
	}{
		{"placeholder", Placeholder, StatePlaceholder, ""},
		{"placeholder without newline", strings.TrimSuffix(Placeholder, "\n"), StatePlaceholder, ""},
		{"save image", string(image), StateSaved, ""},
		{"cut in the header", string(image[:saveHeader-1]), "", "cut short in its header"},
		{"cut in the XML", string(image[:saveHeader+10]), "", "saved state cut short"},
		{"no QEMU stream", string(append(append(h, xml...), "XXXXpadding"...)), "", "no QEMU machine state"},
		{"placeholder and more", Placeholder + "and more text after it", "", "neither"},
		{"garbage", "garbage", "", "neither"},
		{"empty", "", "", "neither"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadState(p)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %q, %v; want %q, %q", tc.name, got, err, tc.want, tc.err)
		}
	}
}
