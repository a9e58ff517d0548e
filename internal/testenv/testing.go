package testenv

import (
	"path/filepath"
	"testing"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// SlapdFor starts a slapd of the test's own and stops it when the test ends.
// An empty opts.Dir is a directory in the test's TempDir. The database never
// syncs: a test's directory need not survive the machine crashing.
func SlapdFor(tb testing.TB, opts SlapdOptions) *Slapd {
	tb.Helper()
	if opts.Dir == "" {
		opts.Dir = filepath.Join(tb.TempDir(), "slapd")
	}
	opts.NoSync = true
	s, err := StartSlapd(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Stop() })
	return s
}

// SlapdStore is SlapdFor and a store on it bound as the root DN.
func SlapdStore(tb testing.TB, opts SlapdOptions) (*Slapd, *ldapschema.Store) {
	tb.Helper()
	s := SlapdFor(tb, opts)
	return s, s.AdminStore(tb)
}

// AdminOptions dial the directory as its root DN, whom no access rule limits.
func (s *Slapd) AdminOptions() ldapschema.StoreOptions {
	return ldapschema.StoreOptions{URL: s.URL, BindDN: s.AdminDN, Password: s.AdminPassword, Base: s.Base}
}

// AdminStore dials the directory as its root DN; the store is closed when
// the test ends.
func (s *Slapd) AdminStore(tb testing.TB) *ldapschema.Store {
	tb.Helper()
	return DialStore(tb, s.AdminOptions())
}

// DialStore dials a store that is closed when the test ends.
func DialStore(tb testing.TB, opts ldapschema.StoreOptions) *ldapschema.Store {
	tb.Helper()
	st, err := ldapschema.Dial(opts)
	if err != nil {
		tb.Fatalf("dial %s as %q: %v", opts.URL, opts.BindDN, err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}
