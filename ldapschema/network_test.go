package ldapschema

import (
	"errors"
	"fmt"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

// A reset connection is the transport's failure, whichever way go-ldap
// reports it; an answer of the server, or a request that cannot be built,
// is not.
func TestNetworkErrorsAreTheTransports(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{errors.New("unable to send request: write tcp 127.0.0.1:53612->127.0.0.1:38905: write: connection reset by peer"), true},
		{ldap.NewError(ldap.ErrorNetwork, errors.New("ldap: connection closed")), true},
		{fmt.Errorf("bind: %w", ldap.NewError(ldap.LDAPResultServerDown, errors.New("down"))), true},
		{ldap.NewError(ldap.LDAPResultInvalidCredentials, errors.New("invalid credentials")), false},
		{ldap.NewError(ldap.LDAPResultAssertionFailed, errors.New("assertion failed")), false},
		{ldap.NewError(ldap.ErrorFilterCompile, errors.New("bad filter")), false},
	} {
		if got := isNetworkError(c.err); got != c.want {
			t.Errorf("%v: network %v, want %v", c.err, got, c.want)
		}
	}
}
