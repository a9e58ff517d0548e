package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	lv "libvirt.org/go/libvirt"
)

// LibvirtdOptions configures StartLibvirtd.
type LibvirtdOptions struct {
	// Dir holds the instance's config, sockets, state, cache and logs. It must
	// exist and be short: the socket path must fit in 108 bytes.
	Dir string
}

// Libvirtd is a private libvirtd with the QEMU driver, running as root in its
// own mount namespace so that it never touches the host's /etc/libvirt or
// /run/libvirt, and nothing but its socket is shared with the host.
type Libvirtd struct {
	URI    string // qemu:///system?socket=<Dir>/run/libvirt-sock
	Dir    string
	LogDir string // libvirtd.log and qemu/<vm>.log, as seen from outside

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for

	reaper *exec.Cmd // see startReaper
	alive  *os.File  // its pipe: closed when the test binary is gone
}

// The directories bind-mounted over the system paths inside the namespace.
var libvirtdMounts = []struct{ sub, target string }{
	{"run", "/run/libvirt"},
	{"etc", "/etc/libvirt"},
	{"lib", "/var/lib/libvirt"},
	{"cache", "/var/cache/libvirt"},
	{"log", "/var/log/libvirt"},
}

// StartLibvirtd starts libvirtd in opts.Dir and waits until its socket
// answers. It needs root (it mounts). Files the tests use must live outside
// the five bind-mounted system paths so both sides see them at the same path;
// a tmpfs must be mounted (MountTmpfs) before this call to be visible to QEMU.
func StartLibvirtd(opts LibvirtdOptions) (*Libvirtd, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("testenv: libvirtd needs root (it mounts in a private namespace)")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "run", "libvirt-sock")
	if len(sock) > 100 {
		return nil, fmt.Errorf("testenv: socket path %s too long for a unix socket", sock)
	}
	for _, m := range libvirtdMounts {
		if err := os.MkdirAll(filepath.Join(dir, m.sub), 0o755); err != nil {
			return nil, err
		}
	}
	if err := writeLibvirtdConfig(dir); err != nil {
		return nil, err
	}
	d := &Libvirtd{
		URI:    "qemu:///system?socket=" + sock,
		Dir:    dir,
		LogDir: filepath.Join(dir, "log"),
	}
	if err := d.startReaper(); err != nil {
		return nil, err
	}
	if err := d.start(); err != nil {
		d.stopReaper()
		return nil, err
	}
	return d, nil
}

func writeLibvirtdConfig(dir string) error {
	files := map[string]string{
		"etc/libvirtd.conf": `auth_unix_rw = "none"
unix_sock_rw_perms = "0700"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
`,
		// stdio_handler "file": no virtlogd here. QEMU runs as root because
		// the test images belong to root.
		"etc/qemu.conf": `stdio_handler = "file"
user = "root"
group = "root"
`,
	}
	// The QEMU driver resolves its built-in user "libvirt-qemu" before it
	// reads qemu.conf, and that user only exists once libvirt-daemon-system
	// is installed: give the namespace passwd and group files that have it.
	for _, f := range []string{"passwd", "group"} {
		b, err := os.ReadFile("/etc/" + f)
		if err != nil {
			return err
		}
		s := string(b)
		if !strings.Contains(s, "\nlibvirt-qemu:") && !strings.HasPrefix(s, "libvirt-qemu:") {
			if !strings.HasSuffix(s, "\n") {
				s += "\n"
			}
			if f == "passwd" {
				s += "libvirt-qemu:x:64055:64055:Libvirt Qemu:/nonexistent:/usr/sbin/nologin\n"
			} else {
				s += "libvirt-qemu:x:64055:\n"
			}
		}
		files["etc/"+f] = s
	}
	var sh strings.Builder
	sh.WriteString("set -e\nmount -t tmpfs -o mode=0755 tmpfs /run\n")
	for _, m := range libvirtdMounts {
		fmt.Fprintf(&sh, "mkdir -p %s\nmount --bind %s %s\n", m.target, shellQuote(filepath.Join(dir, m.sub)), m.target)
	}
	for _, f := range []string{"passwd", "group"} {
		fmt.Fprintf(&sh, "mount --bind %s /etc/%s\n", shellQuote(filepath.Join(dir, "etc", f)), f)
	}
	fmt.Fprintf(&sh, "exec libvirtd --config %s --pid-file /run/libvirt/libvirtd.pid\n",
		shellQuote(filepath.Join(dir, "etc", "libvirtd.conf")))
	files["start-libvirtd.sh"] = sh.String()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (d *Libvirtd) start() error {
	out, err := os.OpenFile(filepath.Join(d.LogDir, "libvirtd.stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	sock := filepath.Join(d.Dir, "run", "libvirt-sock")
	_ = os.Remove(sock) // a stale socket from a killed instance would look ready
	// unshare execs the script, which execs libvirtd: cmd.Process is libvirtd.
	cmd := exec.Command("unshare", "--mount", "--propagation", "private",
		"sh", filepath.Join(d.Dir, "start-libvirtd.sh"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testenv: start libvirtd: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	d.mu.Lock()
	d.cmd, d.done = cmd, done
	d.mu.Unlock()

	deadline := time.After(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			return fmt.Errorf("testenv: libvirtd exited at start: %s", d.logTail())
		case <-deadline:
			d.Kill()
			return fmt.Errorf("testenv: libvirtd socket not ready after 30s: %s", d.logTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The first connection probes QEMU's capabilities (seconds when cold):
	// pay for it here, not in the first test.
	c, err := lv.NewConnect(d.URI)
	if err != nil {
		d.Kill()
		return fmt.Errorf("testenv: connect to libvirtd: %w: %s", err, d.logTail())
	}
	defer c.Close()
	if _, err := c.GetCapabilities(); err != nil {
		d.Kill()
		return fmt.Errorf("testenv: libvirtd capabilities: %w: %s", err, d.logTail())
	}
	return nil
}

// reaperScript waits until its stdin ends, that is until the test binary
// is gone, then ends the QEMUs and the libvirtd of the instance in $1 by
// their pid files. A binary past its -timeout panics, and one killed exits,
// without running Stop: their QEMUs would run on for good.
const reaperScript = `cat >/dev/null
for f in "$1"/run/qemu/*.pid "$1"/run/libvirtd.pid; do
	[ -f "$f" ] || continue
	p=$(cat "$f")
	case "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" in
	*qemu-system*|*libvirtd*) kill "$p" ;;
	esac
done`

// startReaper starts the reaper of this instance, in a process group of
// its own so that an interrupt of the test binary leaves it to do its job.
func (d *Libvirtd) startReaper() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command("sh", "-c", reaperScript, "reaper", d.Dir)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("testenv: start the reaper: %w", err)
	}
	d.reaper, d.alive = cmd, w
	return nil
}

// stopReaper lets the reaper end whatever Stop could not, and waits for it.
func (d *Libvirtd) stopReaper() {
	if d.reaper == nil {
		return
	}
	d.alive.Close()
	_ = d.reaper.Wait()
	d.reaper = nil
}

func (d *Libvirtd) logTail() string {
	var lines []string
	for _, name := range []string{"libvirtd.stderr", "libvirtd.log"} {
		f, err := os.Open(filepath.Join(d.LogDir, name))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		f.Close()
	}
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return strings.Join(lines, "\n")
}

// signal sends sig to libvirtd and waits for it to exit.
func (d *Libvirtd) signal(sig syscall.Signal, grace time.Duration) {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Stop destroys every running domain, so no QEMU outlives the test binary,
// then stops libvirtd. Safe to call twice and after Kill.
func (d *Libvirtd) Stop() error {
	d.mu.Lock()
	running := d.cmd != nil && !Closed(d.done)
	d.mu.Unlock()
	var firstErr error
	if !running {
		// QEMUs of a killed libvirtd may still run: bring one up to end them.
		if err := d.start(); err != nil {
			return err
		}
	}
	if c, err := lv.NewConnect(d.URI); err == nil {
		doms, err := c.ListAllDomains(lv.CONNECT_LIST_DOMAINS_ACTIVE)
		if err != nil {
			firstErr = err
		}
		for _, dom := range doms {
			if err := dom.Destroy(); err != nil && firstErr == nil {
				firstErr = err
			}
			dom.Free()
		}
		c.Close()
	} else {
		firstErr = err
	}
	d.signal(syscall.SIGTERM, 10*time.Second)
	d.mu.Lock()
	d.cmd = nil
	d.mu.Unlock()
	d.stopReaper()
	return firstErr
}

// Kill ends libvirtd with SIGKILL, as a crash would; its QEMUs keep running.
func (d *Libvirtd) Kill() {
	d.signal(syscall.SIGKILL, 10*time.Second)
}

// Restart stops libvirtd (SIGTERM, QEMUs keep running, as in production) if
// it still runs and starts it again on the same directories; it reconnects
// to the running domains.
func (d *Libvirtd) Restart() error {
	d.signal(syscall.SIGTERM, 10*time.Second)
	return d.start()
}

// Closed reports whether ch is closed: for a child process's done
// channel, whether it has exited.
func Closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// MountTmpfs mounts a tmpfs of size bytes on dir (created if needed), for a
// test that needs a small or full filesystem. Call it before StartLibvirtd:
// libvirtd's namespace only sees mounts that existed when it started.
func MountTmpfs(dir string, size int64) (unmount func() error, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		return nil, fmt.Errorf("testenv: mount tmpfs on %s: %w", dir, err)
	}
	return func() error {
		if err := syscall.Unmount(dir, 0); err != nil {
			// Still held (e.g. by a QEMU): detach it now, freed when released.
			return syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		return nil
	}, nil
}
