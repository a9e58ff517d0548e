package ldapschema

import "testing"

func TestReturnCodes(t *testing.T) {
	// The table the web UI displays; 14 was never assigned.
	want := map[int]string{
		0: "success", 1: "undefined error", 2: "missing parameter in config file",
		3: "configured RAM disk is not valid", 4: "not enough space on RAM disk",
		5: "cannot save machine state", 6: "cannot write to backup location",
		7: "cannot copy file to backup location", 8: "cannot copy image", 9: "cannot copy XML",
		10: "cannot copy backend file", 11: "cannot merge disk images",
		12: "cannot remove old disk image", 13: "cannot remove file",
		15: "cannot create empty disk image", 16: "cannot rename disk image",
		17: "cannot connect to backend", 18: "wrong state information",
		19: "cannot set disk image ownership", 20: "cannot set disk image permission",
		21: "cannot restore machine", 22: "cannot lock machine", 23: "cannot find machine",
		24: "cannot copy state file to retain", 25: "retain root directory does not exist",
		26: "backup root directory does not exist", 27: "cannot create directory",
		28: "cannot save XML", 29: "cannot save backend entry",
		30: "cannot set directory ownership", 31: "cannot set directory permission",
		32: "cannot find configuration entry", 33: "backend/XML inconsistency",
		34: "cannot create tarball", 35: "unsupported file transfer protocol",
		36: "unknown backend type", 37: "missing necessary files", 38: "corrupt disk image found",
		39: "unsupported configuration parameter", 40: "cannot move disk image to original location",
		41: "cannot define machine", 42: "cannot start machine", 43: "cannot work on undefined object",
		44: "cannot read state file", 45: "cannot read XML file",
		46: "not all files deleted from retain location", 47: "not enough disk space",
		48: "no disk space information",
	}
	for n := 0; n <= 48; n++ {
		c := ReturnCode(n)
		text, ok := want[n]
		if c.Known() != ok {
			t.Errorf("ReturnCode(%d).Known() = %v, want %v", n, c.Known(), ok)
		}
		if ok && c.String() != text {
			t.Errorf("ReturnCode(%d) = %q, want %q", n, c.String(), text)
		}
		if !ok && c.String() != "unknown return code 14" {
			t.Errorf("ReturnCode(%d) = %q", n, c.String())
		}
	}
	if ReturnCode(49).Known() || ReturnCode(-1).Known() {
		t.Error("codes outside the table must not be known")
	}
	// Spot-check that the names carry the right numbers.
	for c, n := range map[ReturnCode]int{
		RCSuccess: 0, RCUndefined: 1, RCMissingParameter: 2, RCRAMDiskInvalid: 3, RCRAMDiskFull: 4,
		RCCannotSaveState: 5, RCCannotCreateImage: 15, RCCannotLockMachine: 22, RCNoConfig: 32,
		RCUnsupportedProtocol: 35, RCCannotReadXML: 45, RCRetainNotEmpty: 46, RCNoSpace: 47, RCNoSpaceInfo: 48,
	} {
		if int(c) != n {
			t.Errorf("%q is %d, want %d", c, int(c), n)
		}
	}
}
