package hostio

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// FaultKind is what an armed seam does at its operation.
type FaultKind int

const (
	NoFault     FaultKind = iota
	CrashBefore           // end the process before the operation runs
	CrashAfter            // end the process after the operation ran
	FailWith              // the operation fails with Fault.Errno and does nothing
)

// Fault is one planned fault: at the Nth operation (counted from 1 since
// the seam was armed).
type Fault struct {
	Kind  FaultKind
	N     int
	Errno syscall.Errno // for FailWith: EIO or ENOSPC
}

func (f Fault) String() string {
	switch f.Kind {
	case CrashBefore:
		return fmt.Sprintf("crash-before:%d", f.N)
	case CrashAfter:
		return fmt.Sprintf("crash-after:%d", f.N)
	case FailWith:
		return fmt.Sprintf("fail:%d:%s", f.N, errnoName(f.Errno))
	}
	return "none"
}

// ParseFault reads "crash-before:N", "crash-after:N" or "fail:N:EIO|ENOSPC".
func ParseFault(s string) (Fault, error) {
	parts := strings.Split(s, ":")
	bad := fmt.Errorf("fault %q: want crash-before:N, crash-after:N or fail:N:EIO|ENOSPC", s)
	if len(parts) < 2 {
		return Fault{}, bad
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil || n < 1 {
		return Fault{}, bad
	}
	switch {
	case parts[0] == "crash-before" && len(parts) == 2:
		return Fault{Kind: CrashBefore, N: n}, nil
	case parts[0] == "crash-after" && len(parts) == 2:
		return Fault{Kind: CrashAfter, N: n}, nil
	case parts[0] == "fail" && len(parts) == 3:
		switch parts[2] {
		case "EIO":
			return Fault{Kind: FailWith, N: n, Errno: syscall.EIO}, nil
		case "ENOSPC":
			return Fault{Kind: FailWith, N: n, Errno: syscall.ENOSPC}, nil
		}
	}
	return Fault{}, bad
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EIO:
		return "EIO"
	case syscall.ENOSPC:
		return "ENOSPC"
	}
	return strconv.Itoa(int(e))
}

// ErrInjected marks a failure the seam made up; errors.Is also finds its errno.
var ErrInjected = errors.New("injected fault")

// InjectedError is the error an armed seam returns from its operation.
type InjectedError struct {
	Op    string
	N     int
	Errno syscall.Errno
}

func (e *InjectedError) Error() string {
	return fmt.Sprintf("%s: %v (injected at operation %d)", e.Op, e.Errno, e.N)
}

func (e *InjectedError) Is(target error) bool {
	return target == ErrInjected || target == e.Errno
}

func (e *InjectedError) Unwrap() error { return e.Errno }

// Seam counts the operations of node steps and carries out an armed fault.
// The zero value and a nil *Seam run every operation unchanged. Safe for
// concurrent use; faults are meant for one step at a time.
type Seam struct {
	mu    sync.Mutex
	n     int
	fault Fault
	// Crash ends the process; tests replace it (e.g. to park the goroutine
	// for ever, which leaves the host exactly as a kill would). Default:
	// SIGKILL to this process.
	Crash func(op string, n int)
	// Trace is told every operation, in order (for counting and for the
	// harness's one line per point).
	Trace func(n int, op string)
	// Pick, when set, chooses the fault carried out at each operation in
	// place of the armed one (its N is not read): a harness anchors a fault
	// to an operation's name where the count before it varies from run to
	// run, or puts a second fault into the rollback or re-run the first one
	// set off. Called before Trace.
	Pick func(n int, op string) Fault
}

// Arm plans a fault and restarts the count.
func (s *Seam) Arm(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n, s.fault = 0, f
}

// Count is how many operations ran since the seam was armed.
func (s *Seam) Count() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// EnvFault is the environment variable a child process reads its fault
// from (a test harness sets it; nothing in production does).
const EnvFault = "STONEY_INJECT_FAULT"

// FromEnv returns a seam armed from EnvFault, or an unarmed one.
func FromEnv() (*Seam, error) {
	s := &Seam{}
	if v := os.Getenv(EnvFault); v != "" {
		f, err := ParseFault(v)
		if err != nil {
			return nil, err
		}
		s.Arm(f)
	}
	return s, nil
}

// Do runs one named operation through the seam.
func (s *Seam) Do(op string, f func() error) error {
	if s == nil {
		return f()
	}
	s.mu.Lock()
	s.n++
	n, fault := s.n, s.fault
	trace, crash, pick := s.Trace, s.Crash, s.Pick
	s.mu.Unlock()
	hit := fault.Kind != NoFault && fault.N == n
	if pick != nil {
		fault = pick(n, op)
		hit = fault.Kind != NoFault
	}
	if trace != nil {
		trace(n, op)
	}
	if hit {
		switch fault.Kind {
		case CrashBefore:
			s.crash(crash, op, n)
		case FailWith:
			return &InjectedError{Op: op, N: n, Errno: fault.Errno}
		}
	}
	err := f()
	if hit && fault.Kind == CrashAfter {
		s.crash(crash, op, n)
	}
	return err
}

func (s *Seam) crash(crash func(string, int), op string, n int) {
	if crash != nil {
		crash(op, n)
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
