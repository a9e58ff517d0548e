package node

import (
	"errors"
	"fmt"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
)

// stepError carries the return code a failed step reports on its leaf.
type stepError struct {
	code ldapschema.ReturnCode
	err  error
}

func (e *stepError) Error() string { return fmt.Sprintf("%v (return code %d)", e.err, int(e.code)) }
func (e *stepError) Unwrap() error { return e.err }

// fail wraps err with the return code the leaf will carry.
func fail(code ldapschema.ReturnCode, err error) error {
	if err == nil {
		return nil
	}
	var se *stepError
	if errors.As(err, &se) {
		return err // the innermost, most specific code wins
	}
	return &stepError{code: code, err: err}
}

func failf(code ldapschema.ReturnCode, format string, args ...any) error {
	return &stepError{code: code, err: fmt.Errorf(format, args...)}
}

// adapterCodes maps the hypervisor adapter's error classes onto the original codes.
var adapterCodes = []struct {
	err  error
	code ldapschema.ReturnCode
}{
	{libvirt.ErrDomainNotFound, ldapschema.RCCannotFindMachine},
	{libvirt.ErrDiskMismatch, ldapschema.RCBackendXMLInconsistent},
	{libvirt.ErrNoSpace, ldapschema.RCNoSpace},
	{libvirt.ErrSaveFailed, ldapschema.RCCannotSaveState},
	{libvirt.ErrRenameImage, ldapschema.RCCannotRenameImage},
	{libvirt.ErrCreateOverlay, ldapschema.RCCannotCreateImage},
	{libvirt.ErrOwnership, ldapschema.RCCannotChownImage},
	{libvirt.ErrPermission, ldapschema.RCCannotChmodImage},
	{libvirt.ErrSaveXML, ldapschema.RCCannotSaveXML},
	{libvirt.ErrRestoreFailed, ldapschema.RCCannotRestoreMachine},
	{libvirt.ErrMergeFailed, ldapschema.RCCannotMergeImages},
	{libvirt.ErrCorruptImage, ldapschema.RCCorruptImage},
	{libvirt.ErrMissingFile, ldapschema.RCMissingFiles},
	{libvirt.ErrInvalidRAMDisk, ldapschema.RCRAMDiskInvalid},
	{libvirt.ErrStateFile, ldapschema.RCCannotCopyStateToRetain},
	{libvirt.ErrInconsistent, ldapschema.RCWrongState},
	{libvirt.ErrConnection, ldapschema.RCCannotConnectBackend},
	{ldapschema.ErrNoConfig, ldapschema.RCNoConfig},
	{ldapschema.ErrUnsupportedProtocol, ldapschema.RCUnsupportedProtocol},
	{ldapschema.ErrUnavailable, ldapschema.RCCannotConnectBackend},
}

// codeOf is the return code for err: 0 for nil, the step's own code if it set
// one, else the adapter's class, else 1 (undefined error).
func codeOf(err error) ldapschema.ReturnCode {
	if err == nil {
		return ldapschema.RCSuccess
	}
	var se *stepError
	if errors.As(err, &se) {
		return se.code
	}
	for _, m := range adapterCodes {
		if errors.Is(err, m.err) {
			return m.code
		}
	}
	return ldapschema.RCUndefined
}
