package libvirt

import (
	"errors"
	"fmt"
	"testing"

	lv "libvirt.org/go/libvirt"
)

func TestSameDisks(t *testing.T) {
	have := []Disk{{Target: "vda", Source: "/img/a.qcow2"}, {Target: "vdb", Source: "/img/b.qcow2"}}
	if err := sameDisks([]Disk{{Target: "vdb", Source: "/img//b.qcow2"}, {Target: "vda", Source: "/img/a.qcow2"}}, have); err != nil {
		t.Error(err)
	}
	for _, want := range [][]Disk{
		{{Target: "vda", Source: "/img/a.qcow2"}},
		{{Target: "vda", Source: "/img/a.qcow2"}, {Target: "vdb", Source: "/img/c.qcow2"}},
		{{Target: "vda", Source: "/img/a.qcow2"}, {Target: "vdc", Source: "/img/b.qcow2"}},
	} {
		if err := sameDisks(want, have); !errors.Is(err, ErrDiskMismatch) {
			t.Errorf("%v: %v", want, err)
		}
	}
}

func TestIsTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{lv.Error{Code: lv.ERR_NO_CONNECT}, true},
		{lv.Error{Code: lv.ERR_RPC, Domain: lv.FROM_RPC}, true},
		{lv.Error{Code: lv.ERR_SYSTEM_ERROR, Domain: lv.FROM_RPC}, true},
		{lv.Error{Code: lv.ERR_INTERNAL_ERROR, Domain: lv.FROM_RPC}, true},
		{lv.Error{Code: lv.ERR_SYSTEM_ERROR, Domain: lv.FROM_QEMU}, false},
		{lv.Error{Code: lv.ERR_NO_DOMAIN}, false},
		{fmt.Errorf("%w: x: %w", ErrSaveFailed, lv.Error{Code: lv.ERR_INVALID_CONN}), true},
		{wrap(ErrConnection, errors.New("refused"), "uri"), true},
		{ErrNoSpace, false},
	} {
		if got := IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v", tc.err, got)
		}
	}
	err := wrap(ErrSaveFailed, lv.Error{Code: lv.ERR_OPERATION_FAILED}, "vm")
	var le lv.Error
	if !errors.Is(err, ErrSaveFailed) || !errors.As(err, &le) {
		t.Errorf("%v does not carry both its class and its cause", err)
	}
}

// A failure kept by name in a record reads back as the same class, so a
// re-run that ends its rollback answers the code of the failure behind it.
func TestRecordedFailureKeepsItsClass(t *testing.T) {
	cause := fmt.Errorf("%w: remove x.interim: input/output error", ErrCreateOverlay)
	name := snapClasses.of(cause, nil)
	again := snapClasses.recorded(cause.Error(), name, ErrInconsistent)
	if !errors.Is(again, ErrCreateOverlay) || again.Error() != cause.Error() {
		t.Errorf("recorded %q as %q, reads back as %v", cause, name, again)
	}
	if err := snapClasses.recorded("lost", snapClasses.of(errors.New("lost"), nil), ErrInconsistent); !errors.Is(err, ErrInconsistent) {
		t.Errorf("a failure of no class reads back as %v", err)
	}
	if name := restoreClasses.of(errors.New("lost"), ErrRestoreFailed); name != ErrRestoreFailed.Error() {
		t.Errorf("a restore's failure of no class is kept as %q", name)
	}
}
