package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// Placeholder is the state file of a VM that was not running, as the
// original system wrote it. Recovery also accepts it without the newline,
// the form it looked for before.
const Placeholder = "Machine is not running, no state file\n"

// StateKind is what a state file holds.
type StateKind string

// The kinds of a valid state file.
const (
	StateSaved       StateKind = "saved"       // the VM ran: its saved state
	StatePlaceholder StateKind = "placeholder" // the VM was shut off: Placeholder
)

// libvirt's QEMU save image: a header, data_len bytes of XML (and padding),
// then QEMU's migration stream, which starts with "QEVM" when uncompressed.
// While libvirt is still writing one it starts with "LibvirtQemudPart".
const (
	saveMagic  = "LibvirtQemudSave"
	saveHeader = 16 + 19*4
	qemuStream = "QEVM"
)

// IsSaveImage reports whether path is a complete libvirt save image (not a
// placeholder, not one libvirt is still writing); read without following a
// link in its name.
func IsSaveImage(path string) bool {
	p, err := hostio.Beneath(filepath.Dir(path), path)
	return err == nil && IsSaveImageAt(p)
}

// IsSaveImageAt is IsSaveImage of p, read without following a link below its root.
func IsSaveImageAt(p hostio.Path) bool {
	f, err := hostio.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(saveMagic))
	if _, err := io.ReadFull(f, b); err != nil {
		return false
	}
	return string(b) == saveMagic
}

// ReadState tells a saved state from the placeholder of a VM that was not
// running, checking a saved state more closely than IsSaveImage: a save
// image cut short is an error.
func ReadState(path string) (StateKind, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	return readState(f, st.Size())
}

// readState is ReadState of the size bytes r holds: a state file, or one
// rebuilt from the chunk store as it is read.
func readState(r io.ReaderAt, size int64) (StateKind, error) {
	head := make([]byte, saveHeader)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	head = head[:n]
	text := strings.TrimSpace(Placeholder)
	if strings.TrimSpace(string(head)) == text && size <= int64(len(text))+2 {
		return StatePlaceholder, nil
	}
	if !bytes.HasPrefix(head, []byte(saveMagic)) {
		return "", errors.New("neither a saved VM state nor the placeholder of a VM that was not running")
	}
	if n < saveHeader {
		return "", errors.New("saved state cut short in its header")
	}
	var order binary.ByteOrder = binary.LittleEndian
	if v := order.Uint32(head[16:]); v > 0xffff {
		order = binary.BigEndian // written on a host of the other byte order
	}
	dataLen, compressed := int64(order.Uint32(head[20:])), order.Uint32(head[28:])
	stream := int64(saveHeader) + dataLen
	if size <= stream {
		return "", fmt.Errorf("saved state cut short: %d bytes, its header promises more than %d", size, stream)
	}
	if compressed == 0 {
		magic := make([]byte, len(qemuStream))
		if _, err := r.ReadAt(magic, stream); err != nil || string(magic) != qemuStream {
			return "", errors.New("saved state holds no QEMU machine state after its header")
		}
	}
	return StateSaved, nil
}
