package crashtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// daemon is one of our binaries running as a child process. Like systemd
// (Restart=on-failure, RestartPreventExitStatus=2) it is started again when
// it exits by itself, and the exit is recorded: a crash we did not cause is
// worth reporting.
type daemon struct {
	name, path string
	args       []string
	logPath    string

	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{} // closed once cmd has been waited for
	ending    bool          // we are killing or stopping it
	closed    bool          // torn down: no more restarts
	selfExits []string      // exits nobody asked for
}

func newDaemon(name, path, logPath string, args ...string) *daemon {
	return &daemon{name: name, path: path, args: args, logPath: logPath}
}

func (d *daemon) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.startLocked()
}

func (d *daemon) startLocked() error {
	if d.cmd != nil && !testenv.Closed(d.done) {
		return fmt.Errorf("%s is already running", d.name)
	}
	f, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "==== crashtest: %s started %s\n", d.name, time.Now().Format("15:04:05.000"))
	cmd := exec.Command(d.path, d.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so a kill takes its children (qemu-img) too, as
	// systemd does with the unit's control group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	done := make(chan struct{})
	d.cmd, d.done, d.ending = cmd, done, false
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "==== crashtest: %s exited %s: %v\n", d.name, time.Now().Format("15:04:05.000"), err)
		f.Close()
		d.mu.Lock()
		if d.cmd == cmd && !d.ending && !d.closed {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			d.selfExits = append(d.selfExits, fmt.Sprintf("%s exited by itself at %s (%v)", d.name, time.Now().Format("15:04:05.000"), err))
			if code := exitCode(err); code != 2 {
				time.AfterFunc(time.Second, func() {
					d.mu.Lock()
					defer d.mu.Unlock()
					if d.cmd == cmd && !d.closed {
						_ = d.startLocked()
					}
				})
			}
		}
		d.mu.Unlock()
		close(done)
	}()
	return nil
}

// kill sends SIGKILL to the daemon's process group at once and returns a
// channel closed when it has been reaped.
func (d *daemon) kill() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	d.ending = true
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	return d.done
}

// running reports whether the daemon's process is alive.
func (d *daemon) running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd != nil && !testenv.Closed(d.done)
}

// stop ends the daemon for good: SIGTERM, then SIGKILL after a grace time.
func (d *daemon) stop() {
	d.mu.Lock()
	d.closed, d.ending = true, true
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// takeSelfExits returns and forgets the exits recorded since the last call.
func (d *daemon) takeSelfExits() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.selfExits
	d.selfExits = nil
	return out
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// logSize is where a log file ends now, to read what a crash point added.
func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logLines returns the lines of path after offset that contain one of subs,
// at most max of them (the last ones).
func logLines(path string, offset int64, max int, subs ...string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, s := range subs {
			if strings.Contains(line, s) {
				out = append(out, line)
				break
			}
		}
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

// goTool is the go command that runs this test: go test puts its own
// GOROOT/bin first in PATH.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// buildDaemons compiles controld and nodebackupd into dir.
func buildDaemons(dir string) error {
	const mod = "github.com/stoneycloud/stoney-conductor/"
	cmd := exec.Command(goTool(), "build", "-o", dir+string(filepath.Separator), mod+"controld", mod+"nodebackupd")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}
