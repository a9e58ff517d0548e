package ldapschema

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// returnCodesShown reads the table the web UI displays, as the original
// defined it: one code and its text a line.
func returnCodesShown(t *testing.T) map[int]string {
	t.Helper()
	f, err := os.Open("testdata/returncodes.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[int]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sc.Text() == "" || strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		num, text, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			t.Fatalf("returncodes.txt: %q", sc.Text())
		}
		want[n] = text
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(want) != 48 {
		t.Fatalf("returncodes.txt holds %d codes, want 48 (0 to 48 but 14)", len(want))
	}
	return want
}

func TestReturnCodes(t *testing.T) {
	want := returnCodesShown(t)
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
