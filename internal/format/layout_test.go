package format

import "testing"

// A disk file named like one of the backup's own files would be retained
// beside it and overwritten: the layout refuses it.
func TestDiskNamedLikeBackupFilesIsRefusedByTheLayout(t *testing.T) {
	l := Layout{VM: "vm-001", Leaf: "20240101T000000Z"}
	for _, n := range []string{"vm-001.xml", "vm-001.state", "vm-001.ldif", "vm-001.xml.tmp", "vm-001.state.partial", "vm-001.ldif.tmp"} {
		if err := l.CheckDiskName(n); err == nil {
			t.Errorf("%s accepted", n)
		}
	}
	for _, n := range []string{"vm-001.qcow2", "vm-001-vdb.qcow2", "vm-002.xml"} {
		if err := l.CheckDiskName(n); err != nil {
			t.Errorf("%s refused: %v", n, err)
		}
	}
}

// The places of one iteration's files, as the web UI and the original
// system expect them.
func TestLayoutPlaces(t *testing.T) {
	l := Layout{RetainRoot: "/r", BackupRoot: "/b", Kind: "vm-persistent", Pool: "p", VM: "vm", Leaf: "20240101T000000Z"}
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		l.RetainDir():                     "/r/vm-persistent/p/vm/20240101T000000Z",
		l.BackupDir():                     "/b/vm-persistent/p/vm/20240101T000000Z",
		l.VMRetainDir():                   "/r/vm-persistent/p/vm",
		l.RetainPath().String():           "/r/vm-persistent/p/vm/20240101T000000Z",
		l.BackupPath().String():           "/b/vm-persistent/p/vm/20240101T000000Z",
		l.RetainedDisk("/img/p/vm.qcow2"): "/r/vm-persistent/p/vm/20240101T000000Z/vm.qcow2",
		l.BackupDisk("/img/p/vm.qcow2"):   "/b/vm-persistent/p/vm/20240101T000000Z/vm.qcow2.20240101T000000Z",
		l.BackupName(l.StateName()):       "vm.state.20240101T000000Z",
		l.XMLName() + " " + l.LDIFName():  "vm.xml vm.ldif",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	for _, bad := range []Layout{
		{RetainRoot: "/r", BackupRoot: "/b", Kind: "vm-persistent", Pool: "..", VM: "vm", Leaf: l.Leaf},
		{RetainRoot: "/r", BackupRoot: "/b", Kind: "vm-persistent", Pool: "p", VM: "a/b", Leaf: l.Leaf},
		{RetainRoot: "/r", BackupRoot: "/b", Kind: "vm-persistent", Pool: "p", VM: "vm", Leaf: "yesterday"},
		{RetainRoot: "r", BackupRoot: "/b", Kind: "vm-persistent", Pool: "p", VM: "vm", Leaf: l.Leaf},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	for src, ok := range map[string]bool{"/img/a.qcow2": true, "img/a.qcow2": false, "/img//a.qcow2": false, "/img/..": false} {
		if _, err := DiskFileName(src); (err == nil) != ok {
			t.Errorf("DiskFileName(%q): %v", src, err)
		}
	}
}
