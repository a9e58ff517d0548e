package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	lv "libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Where DefineVM writes a disk's pattern: tests verify the same range.
const (
	PatternOffset = 1 << 20
	PatternLength = 8 << 20
)

// DiskSpec is one qcow2 data disk of a test VM.
type DiskSpec struct {
	Target  string // vda, vdb...
	Path    string
	SizeMiB int
	Pattern byte // written at PatternOffset for PatternLength; 0 = none
}

// VMSpec describes a test VM: no OS, a boot sector that fills its RAM.
type VMSpec struct {
	Name      string
	MemoryMiB int
	Disks     []DiskSpec
	Running   bool
	// BootImage is the read-only boot floppy; default <first disk's dir>/<name>-boot.img.
	BootImage string
	// SerialLog receives the guest's COM1; default <first disk's dir>/<name>-serial.log.
	SerialLog string
	// DirtyRAM: once it has filled its RAM, the guest keeps writing to
	// every page of it, for ever (a live save of it never converges).
	DirtyRAM bool
}

func (s VMSpec) withDefaults() VMSpec {
	dir := os.TempDir()
	if len(s.Disks) > 0 {
		dir = filepath.Dir(s.Disks[0].Path)
	}
	if s.BootImage == "" {
		s.BootImage = filepath.Join(dir, s.Name+"-boot.img")
	}
	if s.SerialLog == "" {
		s.SerialLog = filepath.Join(dir, s.Name+"-serial.log")
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = 64
	}
	return s
}

// SerialPath is where the guest's serial output lands.
func (s VMSpec) SerialPath() string { return s.withDefaults().SerialLog }

// DomainXML returns the domain definition DefineVM uses.
func (s VMSpec) DomainXML() (string, error) {
	s = s.withDefaults()
	port := uint(0)
	dom := libvirtxml.Domain{
		Type:   "qemu",
		Name:   s.Name,
		Memory: &libvirtxml.DomainMemory{Value: uint(s.MemoryMiB), Unit: "MiB"},
		VCPU:   &libvirtxml.DomainVCPU{Value: 1},
		OS: &libvirtxml.DomainOS{
			Type:        &libvirtxml.DomainOSType{Arch: "x86_64", Machine: "pc", Type: "hvm"},
			BootDevices: []libvirtxml.DomainBootDevice{{Dev: "fd"}},
		},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Emulator: "/usr/bin/qemu-system-x86_64",
			Disks: []libvirtxml.DomainDisk{{
				Device:   "floppy",
				Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw"},
				Source:   &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: s.BootImage}},
				Target:   &libvirtxml.DomainDiskTarget{Dev: "fda", Bus: "fdc"},
				ReadOnly: &libvirtxml.DomainDiskReadOnly{},
			}},
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: s.SerialLog, Append: "on"}},
				Target: &libvirtxml.DomainSerialTarget{Port: &port},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	for _, d := range s.Disks {
		dom.Devices.Disks = append(dom.Devices.Disks, libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2"},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: d.Path}},
			Target: &libvirtxml.DomainDiskTarget{Dev: d.Target, Bus: "virtio"},
		})
	}
	return dom.Marshal()
}

// CreateImage makes a qcow2 image of sizeMiB at path and writes into it
// with WriteImage.
func CreateImage(path string, sizeMiB int, writes ...string) error {
	if err := run("qemu-img", "create", "-q", "-f", "qcow2", path, fmt.Sprintf("%dM", sizeMiB)); err != nil {
		return err
	}
	return WriteImage(path, writes...)
}

// WriteImage runs each qemu-io command of writes on the qcow2 image at path
// (e.g. "write -P 0x5a 3M 2M"): data written offline, as a guest would have.
func WriteImage(path string, writes ...string) error {
	for _, cmd := range writes {
		if err := run("qemu-io", "-f", "qcow2", "-c", cmd, path); err != nil {
			return err
		}
	}
	return nil
}

// DefineVM creates the VM's images (qcow2 data disks with their patterns
// written offline, and the boot floppy), defines the domain and starts it if
// spec.Running. Existing images are overwritten.
func DefineVM(uri string, spec VMSpec) error {
	spec = spec.withDefaults()
	for _, d := range spec.Disks {
		var writes []string
		if d.Pattern != 0 {
			writes = append(writes, fmt.Sprintf("write -P 0x%02x %d %d", d.Pattern, PatternOffset, PatternLength))
		}
		if err := CreateImage(d.Path, d.SizeMiB, writes...); err != nil {
			return err
		}
	}
	// A full 1.44 MB image so that the floppy geometry is recognised.
	boot := make([]byte, 1474560)
	copy(boot, bootSector(spec.DirtyRAM))
	if err := os.WriteFile(spec.BootImage, boot, 0o644); err != nil {
		return err
	}
	_ = os.Remove(spec.SerialLog)
	xml, err := spec.DomainXML()
	if err != nil {
		return err
	}
	return withConnect(uri, func(c *lv.Connect) error {
		dom, err := c.DomainDefineXML(xml)
		if err != nil {
			return fmt.Errorf("testenv: define %s: %w", spec.Name, err)
		}
		defer dom.Free()
		if spec.Running {
			if err := dom.Create(); err != nil {
				return fmt.Errorf("testenv: start %s: %w", spec.Name, err)
			}
		}
		return nil
	})
}

// WaitGuestFilled waits until the guest has filled its RAM (it says so on
// its serial port), so that a saved state has its full size.
func WaitGuestFilled(spec VMSpec, timeout time.Duration) error {
	path := spec.SerialPath()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte("FILLED")) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: %s did not fill its RAM within %v (serial: %q)", spec.Name, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartVM starts a defined, shut-off VM.
func StartVM(uri, name string) error {
	return withDomain(uri, name, func(d *lv.Domain) error { return d.Create() })
}

// RemoveVM destroys the VM if it runs and undefines it; images stay.
func RemoveVM(uri, name string) error {
	return withDomain(uri, name, func(d *lv.Domain) error {
		if active, err := d.IsActive(); err == nil && active {
			if err := d.Destroy(); err != nil {
				return err
			}
		}
		return d.Undefine()
	})
}

// withDomain runs f on the domain name, looked up on a connection of its own.
func withDomain(uri, name string, f func(*lv.Domain) error) error {
	return withConnect(uri, func(c *lv.Connect) error {
		d, err := c.LookupDomainByName(name)
		if err != nil {
			return err
		}
		defer d.Free()
		return f(d)
	})
}

// withConnect runs f on a connection to uri of its own.
func withConnect(uri string, f func(*lv.Connect) error) error {
	c, err := lv.NewConnect(uri)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

// VerifyGuestPattern checks that the running VM's disk target reads pattern
// over [off, off+length) as the guest's own block device sees it: the HMP
// qemu-io command reads through the disk's node, and QEMU reports a mismatch
// only in the VM's log (logDir/qemu/<vm>.log), so the log is compared before
// and after. Calls for one VM must not run concurrently.
func VerifyGuestPattern(uri, logDir, vm, target string, pattern byte, off, length int64) error {
	node, _, err := blockNode(uri, vm, target)
	if err != nil {
		return err
	}
	cmd := fmt.Sprintf("read -P 0x%02x %d %d", pattern, off, length)
	done := fmt.Sprintf("read %d/%d bytes at offset %d", length, length, off)
	return qemuIO(uri, logDir, vm, node, cmd, done)
}

// WriteGuestPattern writes pattern over [off, off+length) of the running VM's
// disk target through the guest device's own block backend, as a guest write
// would land.
func WriteGuestPattern(uri, logDir, vm, target string, pattern byte, off, length int64) error {
	return writeGuestPattern(uri, logDir, vm, target, "", pattern, off, length)
}

// WriteGuestPatternDurable is WriteGuestPattern with force unit access:
// the write is on the image when it returns, so it outlives a killed QEMU.
func WriteGuestPatternDurable(uri, logDir, vm, target string, pattern byte, off, length int64) error {
	return writeGuestPattern(uri, logDir, vm, target, "-f ", pattern, off, length)
}

func writeGuestPattern(uri, logDir, vm, target, flags string, pattern byte, off, length int64) error {
	_, dev, err := blockNode(uri, vm, target)
	if err != nil {
		return err
	}
	cmd := fmt.Sprintf("write %s-P 0x%02x %d %d", flags, pattern, off, length)
	done := fmt.Sprintf("wrote %d/%d bytes at offset %d", length, length, off)
	return qemuIO(uri, logDir, vm, "-d "+dev, cmd, done)
}

const patternFailed = "Pattern verification failed"

func qemuIO(uri, logDir, vm, dev, cmd, done string) error {
	logPath := filepath.Join(logDir, "qemu", vm+".log")
	failedBefore, doneBefore, err := countLines(logPath, patternFailed, done)
	if err != nil {
		return err
	}
	var answer string
	err = withDomain(uri, vm, func(d *lv.Domain) error {
		var err error
		answer, err = d.QemuMonitorCommand(fmt.Sprintf("qemu-io %s %q", dev, cmd), lv.DOMAIN_QEMU_MONITOR_COMMAND_HMP)
		return err
	})
	if err != nil {
		return fmt.Errorf("testenv: qemu-io %s on %s: %w", cmd, vm, err)
	}
	// qemu-io prints to QEMU's stdout (the log); the monitor only gets errors.
	if a := strings.TrimSpace(answer); a != "" {
		return fmt.Errorf("testenv: qemu-io %s on %s: %s", cmd, vm, a)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		failed, doneN, err := countLines(logPath, patternFailed, done)
		if err != nil {
			return err
		}
		if failed > failedBefore {
			return fmt.Errorf("testenv: %s: guest of %s does not read what was expected (%s)", cmd, vm, patternFailed)
		}
		if doneN > doneBefore {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testenv: qemu-io %s on %s: no %q in %s", cmd, vm, done, logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countLines(path string, subs ...string) (int, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var n [2]int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		for i, s := range subs[:2] {
			if strings.Contains(sc.Text(), s) {
				n[i]++
			}
		}
	}
	return n[0], n[1], sc.Err()
}

// blockNode finds, from HMP "info block", the node name of the disk with the
// given target and the QOM path of the device it is attached to.
func blockNode(uri, vm, target string) (node, dev string, err error) {
	err = withDomain(uri, vm, func(d *lv.Domain) error {
		x, err := d.GetXMLDesc(0)
		if err != nil {
			return err
		}
		var dom libvirtxml.Domain
		if err := dom.Unmarshal(x); err != nil {
			return err
		}
		alias := ""
		if dom.Devices != nil {
			for _, disk := range dom.Devices.Disks {
				if disk.Target != nil && disk.Target.Dev == target && disk.Alias != nil {
					alias = disk.Alias.Name
				}
			}
		}
		if alias == "" {
			return fmt.Errorf("testenv: %s has no running disk %s", vm, target)
		}
		info, err := d.QemuMonitorCommand("info block", lv.DOMAIN_QEMU_MONITOR_COMMAND_HMP)
		if err != nil {
			return err
		}
		node, dev = parseInfoBlock(info, alias)
		if node == "" {
			return fmt.Errorf("testenv: no block node for %s (%s) of %s in:\n%s", target, alias, vm, info)
		}
		return nil
	})
	return node, dev, err
}

// parseInfoBlock returns the node attached to the device whose id is alias.
func parseInfoBlock(info, alias string) (node, dev string) {
	cur := ""
	for _, line := range strings.Split(strings.ReplaceAll(info, "\r", ""), "\n") {
		if line == "" {
			continue
		}
		if line[0] != ' ' {
			if i := strings.Index(line, ": "); i > 0 {
				cur = line[:i]
			}
			continue
		}
		f := strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(f, "Attached to:"); ok {
			a := strings.TrimSpace(rest)
			if a == alias || strings.Contains(a, "/"+alias+"/") {
				return cur, a
			}
		}
	}
	return "", ""
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testenv: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// GuestMemory returns length bytes of the running VM's guest-physical memory
// from off, as QEMU dumps it (pmemsave) into a file in dir.
func GuestMemory(uri, vm, dir string, off, length int64) ([]byte, error) {
	f, err := os.CreateTemp(dir, vm+"-mem-")
	if err != nil {
		return nil, err
	}
	f.Close()
	defer os.Remove(f.Name())
	cmd := fmt.Sprintf(`{"execute":"pmemsave","arguments":{"val":%d,"size":%d,"filename":%q}}`, off, length, f.Name())
	err = withDomain(uri, vm, func(d *lv.Domain) error {
		_, err := d.QemuMonitorCommand(cmd, lv.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("testenv: pmemsave of %s: %w", vm, err)
	}
	return os.ReadFile(f.Name())
}

// SerialBoots counts how often the guest booted: it prints FILLED once per
// boot, so a guest resumed from its saved memory adds none.
func SerialBoots(spec VMSpec) int {
	b, _ := os.ReadFile(spec.SerialPath())
	return bytes.Count(b, []byte("FILLED"))
}
