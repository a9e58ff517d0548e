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
