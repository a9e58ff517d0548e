package libvirt

import (
	"maps"
	"slices"
	"testing"
)

// The indexes libvirt uses are those of every image in a disk's chain and
// of a block job's destination; a stray node is one of no such index.
func TestNodeIndexes(t *testing.T) {
	x := `<domain type='qemu'><name>v</name><devices>
<disk type='file' device='disk'><source file='/i/vda.qcow2' index='12'/>
  <backingStore type='file' index='13'><format type='qcow2'/><source file='/r/vda.qcow2'/><backingStore/></backingStore>
  <mirror type='file' job='copy' ready='yes'><format type='qcow2'/><source file='/i/x.qcow2' index='18'/></mirror>
  <target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><source file='/i/vdb.qcow2' index='14'/><backingStore/><target dev='vdb' bus='virtio'/></disk>
</devices></domain>`
	known, err := nodeIndexes(x)
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(maps.Keys(known))
	if want := []uint{0, 12, 13, 14, 18}; !slices.Equal(got, want) {
		t.Errorf("indexes %v, want %v (0: the empty backingStore)", got, want)
	}
	for name, want := range map[string]bool{"libvirt-18-storage": true, "libvirt-3-format": true, "#block123": false, "libvirt-x-storage": false} {
		if got := libvirtNode.MatchString(name); got != want {
			t.Errorf("%s of libvirt's naming: %v, want %v", name, got, want)
		}
	}
}
