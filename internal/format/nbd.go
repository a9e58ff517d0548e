package format

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// What cannot be read from an image's files as they lie (compressed or
// encrypted clusters) and a dirty bitmap are read through qemu-nbd: QEMU
// itself resolves the format and the backing chain, and this package only
// speaks the few NBD messages it needs (fixed newstyle handshake,
// NBD_OPT_GO, read, disconnect; simple replies only).

const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic     = 0x49484156454f5054 // "IHAVEOPT"
	nbdRepMagic     = 0x3e889045565a9
	nbdRequestMagic = 0x25609513
	nbdReplyMagic   = 0x67446698

	nbdFlagFixedNewstyle = 1 << 0
	nbdFlagNoZeroes      = 1 << 1

	nbdOptGo       = 7
	nbdRepAck      = 1
	nbdRepInfo     = 3
	nbdInfoExport  = 0
	nbdRepFlagErr  = 1 << 31
	nbdCmdRead     = 0
	nbdCmdDisc     = 2
	nbdMaxTransfer = 32 << 20 // qemu-nbd's limit per request
)

// nbdConn is one client connection to an NBD export. Not for concurrent use.
type nbdConn struct {
	c      net.Conn
	r      *bufio.Reader
	size   int64
	cookie uint64
}

// dialNBD connects to the export at the unix socket path and negotiates it.
func dialNBD(ctx context.Context, socket string) (*nbdConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	n := &nbdConn{c: c, r: bufio.NewReaderSize(c, 1<<20)}
	if err := n.handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("nbd handshake: %w", err)
	}
	return n, nil
}

func (n *nbdConn) handshake() error {
	var hello struct {
		Magic, Opt uint64
		Flags      uint16
	}
	if err := binary.Read(n.r, binary.BigEndian, &hello); err != nil {
		return err
	}
	if hello.Magic != nbdMagic || hello.Opt != nbdOptMagic || hello.Flags&nbdFlagFixedNewstyle == 0 {
		return errors.New("not a fixed newstyle NBD server")
	}
	if err := binary.Write(n.c, binary.BigEndian, uint32(nbdFlagFixedNewstyle|hello.Flags&nbdFlagNoZeroes)); err != nil {
		return err
	}
	// NBD_OPT_GO for the default export, no information requests.
	opt := binary.BigEndian.AppendUint64(nil, nbdOptMagic)
	opt = binary.BigEndian.AppendUint32(opt, nbdOptGo)
	opt = binary.BigEndian.AppendUint32(opt, 4+2)
	opt = binary.BigEndian.AppendUint32(opt, 0) // name length: ""
	opt = binary.BigEndian.AppendUint16(opt, 0)
	if _, err := n.c.Write(opt); err != nil {
		return err
	}
	for {
		var rep struct {
			Magic     uint64
			Opt, Type uint32
			Length    uint32
		}
		if err := binary.Read(n.r, binary.BigEndian, &rep); err != nil {
			return err
		}
		if rep.Magic != nbdRepMagic || rep.Length > 1<<16 {
			return errors.New("bad option reply")
		}
		data := make([]byte, rep.Length)
		if _, err := io.ReadFull(n.r, data); err != nil {
			return err
		}
		switch {
		case rep.Type&nbdRepFlagErr != 0:
			return fmt.Errorf("export refused (%#x): %s", rep.Type, data)
		case rep.Type == nbdRepInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == nbdInfoExport:
			n.size = int64(binary.BigEndian.Uint64(data[2:]))
		case rep.Type == nbdRepAck:
			return nil
		}
	}
}

// request sends one command.
func (n *nbdConn) request(cmd uint16, off int64, length int) (uint64, error) {
	n.cookie++
	h := binary.BigEndian.AppendUint32(make([]byte, 0, 28), nbdRequestMagic)
	h = binary.BigEndian.AppendUint16(h, 0)
	h = binary.BigEndian.AppendUint16(h, cmd)
	h = binary.BigEndian.AppendUint64(h, n.cookie)
	h = binary.BigEndian.AppendUint64(h, uint64(off))
	h = binary.BigEndian.AppendUint32(h, uint32(length))
	if _, err := n.c.Write(h); err != nil {
		return 0, err
	}
	return n.cookie, nil
}

// reply reads a simple reply to cookie, and into buf its data.
func (n *nbdConn) reply(cookie uint64, buf []byte) error {
	var rep struct {
		Magic, Errno uint32
		Cookie       uint64
	}
	if err := binary.Read(n.r, binary.BigEndian, &rep); err != nil {
		return err
	}
	if rep.Magic != nbdReplyMagic || rep.Cookie != cookie {
		return errors.New("nbd: unexpected reply")
	}
	if rep.Errno != 0 {
		return fmt.Errorf("nbd: server error %d", rep.Errno)
	}
	_, err := io.ReadFull(n.r, buf)
	return err
}

// ReadAt reads len(p) bytes at off of the guest-visible disk.
func (n *nbdConn) ReadAt(p []byte, off int64) error {
	for len(p) > 0 {
		l := min(len(p), nbdMaxTransfer)
		c, err := n.request(nbdCmdRead, off, l)
		if err != nil {
			return err
		}
		if err := n.reply(c, p[:l]); err != nil {
			return fmt.Errorf("nbd read at %d: %w", off, err)
		}
		p, off = p[l:], off+int64(l)
	}
	return nil
}

// Close says goodbye and closes the connection.
func (n *nbdConn) Close() error {
	_, _ = n.request(nbdCmdDisc, 0, 0)
	return n.c.Close()
}

// nbdExport is a qemu-nbd serving one image on a private unix socket.
type nbdExport struct {
	dir  string
	cmd  *exec.Cmd
	done chan error
	once sync.Once
	*nbdConn
}

// Socket is where the export listens (for qemu-img's own NBD client).
func (e *nbdExport) Socket() string { return filepath.Join(e.dir, "nbd.sock") }

// exportImage serves the image at path (of the given format) read-only
// through qemu-nbd and connects to it; bitmap, if not empty, also exposes
// that persistent dirty bitmap. The image takes QEMU's locks as a VM
// would: an image a VM writes is not exported.
func exportImage(ctx context.Context, path, format string, bitmap string) (*nbdExport, error) {
	dir, err := os.MkdirTemp("", "stoney-nbd-")
	if err != nil {
		return nil, err
	}
	e := &nbdExport{dir: dir, done: make(chan error, 1)}
	args := []string{"--persistent", "--shared=4", "--socket=" + e.Socket(), "--format=" + format, "--read-only"}
	if bitmap != "" {
		args = append(args, "--bitmap="+bitmap)
	}
	args = append(args, path)
	var stderr strings.Builder
	e.cmd = exec.Command("qemu-nbd", args...)
	e.cmd.Stderr = &stderr
	if err := e.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("qemu-nbd: %w", err)
	}
	go func() { e.done <- e.cmd.Wait() }()
	deadline := time.Now().Add(imageTimeouts().Query)
	for {
		if c, err := dialNBD(ctx, e.Socket()); err == nil {
			e.nbdConn = c
			return e, nil
		}
		select {
		case werr := <-e.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("qemu-nbd %s: %v: %s", strings.Join(args, " "), werr, strings.TrimSpace(stderr.String()))
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			e.stop()
			return nil, fmt.Errorf("%w: qemu-nbd %s did not listen", ErrImageTimeout, path)
		}
	}
}

// stop ends qemu-nbd and removes its socket directory.
func (e *nbdExport) stop() error {
	var err error
	e.once.Do(func() {
		if e.nbdConn != nil {
			e.nbdConn.Close()
		}
		_ = e.cmd.Process.Signal(os.Interrupt)
		select {
		case werr := <-e.done:
			var ee *exec.ExitError
			if werr != nil && !(errors.As(werr, &ee) && !ee.Exited()) {
				err = fmt.Errorf("qemu-nbd: %w", werr)
			}
		case <-time.After(imageTimeouts().Query):
			_ = e.cmd.Process.Kill()
			err = fmt.Errorf("%w: qemu-nbd did not stop", ErrImageTimeout)
		}
		os.RemoveAll(e.dir)
	})
	return err
}
