package libvirt

import (
	"errors"
	"fmt"

	lv "libvirt.org/go/libvirt"

	"github.com/stoneycloud/stoney-conductor/internal/format"
)

// Sentinels classify failures at this edge; callers map them to the
// directory's return codes (shown in brackets) with errors.Is. Errors from
// libvirt stay wrapped too, so errors.As finds an lv.Error.
var (
	ErrDomainNotFound = errors.New("domain not found")                       // 23
	ErrDiskMismatch   = errors.New("disks differ from the domain XML")       // 33
	ErrNoSpace        = errors.New("not enough disk space")                  // 4 / 47
	ErrInvalidRAMDisk = errors.New("RAM disk is not a usable directory")     // 3
	ErrSaveFailed     = errors.New("cannot save machine state")              // 5
	ErrRenameImage    = errors.New("cannot rename disk image")               // 16
	ErrCreateOverlay  = errors.New("cannot create empty disk image")         // 15
	ErrOwnership      = errors.New("cannot set disk image ownership")        // 19
	ErrPermission     = errors.New("cannot set disk image permission")       // 20
	ErrSaveXML        = errors.New("cannot save XML")                        // 28
	ErrStateFile      = errors.New("cannot copy state file to retain")       // 24
	ErrRestoreFailed  = errors.New("cannot restore machine")                 // 21
	ErrMergeFailed    = errors.New("cannot merge disk images")               // 11
	ErrCorruptImage   = format.ErrCorruptImage                               // 38
	ErrMissingFile    = format.ErrMissingFile                                // 37
	ErrConnection     = errors.New("cannot connect to hypervisor")           // 17, transient
	ErrInconsistent   = errors.New("domain and files are in no known state") // 18
)

// IsTransient tells a failure worth retrying later (the libvirt connection
// was lost or refused, e.g. while libvirtd restarts) from a permanent one.
// Operations here are idempotent, so retrying a transient failure is safe.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrConnection) {
		return true
	}
	var e lv.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case lv.ERR_NO_CONNECT, lv.ERR_INVALID_CONN, lv.ERR_RPC, lv.ERR_OPERATION_TIMEOUT:
		return true
	case lv.ERR_SYSTEM_ERROR, lv.ERR_INTERNAL_ERROR:
		// A socket error while talking to libvirtd, not a failure inside it.
		return e.Domain == lv.FROM_RPC || e.Domain == lv.FROM_REMOTE
	}
	return false
}

// isConnLost reports a libvirt error that means the connection is unusable.
func isConnLost(err error) bool {
	var e lv.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case lv.ERR_NO_CONNECT, lv.ERR_INVALID_CONN, lv.ERR_RPC:
		return true
	case lv.ERR_SYSTEM_ERROR, lv.ERR_INTERNAL_ERROR:
		return e.Domain == lv.FROM_RPC || e.Domain == lv.FROM_REMOTE
	}
	return false
}

// wrap returns an error that is both kind and cause for errors.Is/As.
func wrap(kind error, cause error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if cause == nil {
		return fmt.Errorf("%w: %s", kind, msg)
	}
	return fmt.Errorf("%w: %s: %w", kind, msg, cause)
}

// failureClasses are the sentinels an intent record keeps the name of, so
// that a re-run that ends a rollback answers with the code of the failure
// that began it, not with its own.
type failureClasses []error

// of names err's class; otherwise's name (or "") when it has none of them.
func (cs failureClasses) of(err, otherwise error) string {
	for _, c := range cs {
		if errors.Is(err, c) {
			return c.Error()
		}
	}
	if otherwise == nil {
		return ""
	}
	return otherwise.Error()
}

// recorded is a recorded failure again: its text, and errors.Is finds the
// class named (otherwise for a name that is none of them).
func (cs failureClasses) recorded(msg, name string, otherwise error) error {
	class := otherwise
	for _, c := range cs {
		if c.Error() == name {
			class = c
		}
	}
	return recordedFailure{msg: msg, class: class}
}

type recordedFailure struct {
	msg   string
	class error
}

func (e recordedFailure) Error() string { return e.msg }
func (e recordedFailure) Unwrap() error { return e.class }
