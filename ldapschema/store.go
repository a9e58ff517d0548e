package ldapschema

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Errors a Store returns, classified for the callers' retry decisions.
var (
	// ErrNotFound: the entry does not exist (LDAP result 32).
	ErrNotFound = errors.New("ldap entry not found")
	// ErrConflict: a compare-and-swap lost, the entry was not as asserted (122, 16)
	// or an entry to add exists already (68). Re-read and decide again.
	ErrConflict = errors.New("ldap entry changed concurrently")
	// ErrUnavailable: the server could not be reached; transient.
	ErrUnavailable = errors.New("ldap server unavailable")
)

// assertionControlOID is the LDAP assertion control (RFC 4528): the server applies
// the operation only if the entry matches the filter, atomically.
const assertionControlOID = "1.3.6.1.1.12"

// StoreOptions says how to reach and bind to the directory.
// In YAML configs the password comes only from a file.
type StoreOptions struct {
	URL          string        `yaml:"url"` // ldap://host:port, ldapi://path or ldaps://
	BindDN       string        `yaml:"bindDN"`
	Password     string        `yaml:"-"`
	PasswordFile string        `yaml:"passwordFile"` // read when Password is empty; trailing newline dropped
	Base         string        `yaml:"base"`         // e.g. o=stepping-stone,c=ch
	StartTLS     bool          `yaml:"startTLS"`
	CAFile       string        `yaml:"caFile"`     // PEM bundle to verify the server with (StartTLS, ldaps)
	ServerName   string        `yaml:"serverName"` // expected name in the server certificate, default from URL
	Timeout      time.Duration `yaml:"timeout"`
	// InsecurePlaintextToRemote accepts ldap:// without StartTLS to a server
	// on another machine: the bind password and every entry then cross the
	// network readable. Without it such a URL is refused (CheckTransport).
	InsecurePlaintextToRemote bool `yaml:"insecurePlaintextToRemote"`
}

// ErrPlaintextToRemote: the options would send the bind and the directory's
// entries unencrypted to another machine, and do not say that is wanted.
var ErrPlaintextToRemote = errors.New("plain ldap:// to a remote server without StartTLS")

// CheckTransport refuses a connection that would cross the network in
// plain text: ldap:// without StartTLS to a host that is not a loopback
// address or localhost, unless InsecurePlaintextToRemote says so. ldaps://,
// StartTLS and ldapi:// (a local socket) pass. Names are not resolved: a
// name other than localhost counts as remote.
func (o StoreOptions) CheckTransport() error {
	scheme, _, _ := strings.Cut(o.URL, "://")
	if !strings.EqualFold(scheme, "ldap") || o.StartTLS || o.InsecurePlaintextToRemote {
		return nil // ldapi:// may carry a %2F-encoded path url.Parse refuses
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return fmt.Errorf("LDAP url %q: %w", o.URL, err)
	}
	host := u.Hostname()
	if host == "" || strings.EqualFold(host, "localhost") {
		return nil // go-ldap dials localhost for an empty host
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: %s; set startTLS: true, use ldaps:// or ldapi://, "+
		"or accept it in so many words with insecurePlaintextToRemote: true", ErrPlaintextToRemote, o.URL)
}

// password returns the configured password, reading PasswordFile if needed.
func (o StoreOptions) password() (string, error) {
	if o.Password != "" || o.PasswordFile == "" {
		return o.Password, nil
	}
	b, err := os.ReadFile(o.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("read LDAP password file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

func (o StoreOptions) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: o.ServerName, MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// dial opens and binds one connection.
func (o StoreOptions) dial() (*ldap.Conn, error) {
	if err := o.CheckTransport(); err != nil {
		return nil, err
	}
	tcfg, err := o.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tcfg.ServerName == "" && !strings.HasPrefix(o.URL, "ldapi:") {
		if h := hostOf(o.URL); h != "" {
			tcfg.ServerName = h
		}
	}
	opts := []ldap.DialOpt{ldap.DialWithTLSConfig(tcfg)}
	conn, err := ldap.DialURL(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if o.StartTLS {
		if err := conn.StartTLS(tcfg); err != nil {
			conn.Close()
			return nil, fmt.Errorf("StartTLS with %s: %w", o.URL, err)
		}
	}
	if o.BindDN != "" {
		pw, err := o.password()
		if err != nil {
			conn.Close()
			return nil, err
		}
		if err := conn.Bind(o.BindDN, pw); err != nil {
			closing := conn.IsClosing()
			conn.Close()
			if closing || isNetworkError(err) {
				return nil, fmt.Errorf("%w: bind as %s: %v", ErrUnavailable, o.BindDN, err)
			}
			return nil, fmt.Errorf("bind as %s: %w", o.BindDN, err)
		}
	} else if strings.HasPrefix(o.URL, "ldapi:") {
		// SASL EXTERNAL maps the peer's uid onto an identity: the usual local setup.
		if err := conn.ExternalBind(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("SASL EXTERNAL bind on %s: %w", o.URL, err)
		}
	}
	return conn, nil
}

func hostOf(url string) string {
	s := url
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.IndexAny(s, "/"); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndex(s, ":"); i >= 0 {
		s = s[:i]
	}
	return s
}

// Store is the directory: reads and atomic writes on one shared connection, redialled
// when it breaks. Safe for concurrent use.
type Store struct {
	opts StoreOptions
	Tree Tree

	mu   sync.Mutex
	conn *ldap.Conn
}

// Dial connects and binds. The connection is redialled on demand later.
func Dial(opts StoreOptions) (*Store, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	s := &Store{opts: opts, Tree: Tree{Base: opts.Base}}
	if _, err := s.get(); err != nil {
		return nil, err
	}
	return s, nil
}

// Options returns what the store was dialled with (a watch dials its own connection).
func (s *Store) Options() StoreOptions { return s.opts }

// Close drops the connection.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		err := s.conn.Close()
		s.conn = nil
		return err
	}
	return nil
}

func (s *Store) get() (*ldap.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && !s.conn.IsClosing() {
		return s.conn, nil
	}
	c, err := s.opts.dial()
	if err != nil {
		return nil, err
	}
	c.SetTimeout(s.opts.Timeout)
	s.conn = c
	return c, nil
}

// drop forgets a broken connection so the next call redials.
func (s *Store) drop(c *ldap.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c {
		s.conn.Close()
		s.conn = nil
	}
}

// do runs op on the connection, redialling once if the connection was broken.
// Only reads are retried; a write that may have been applied is reported, and the
// caller re-reads (level-triggered) before deciding again.
func (s *Store) do(retry bool, op func(*ldap.Conn) error) error {
	for attempt := 0; ; attempt++ {
		c, err := s.get()
		if err != nil {
			return err
		}
		err = op(c)
		if err == nil {
			return nil
		}
		// A connection the server reset reports its read error unclassified;
		// that the connection is closing is what tells.
		if isNetworkError(err) || c.IsClosing() {
			s.drop(c)
			if retry && attempt == 0 {
				continue
			}
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return classify(err)
	}
}

// isNetworkError says whether err is the transport's, not the server's
// answer: go-ldap reports a write that failed on a reset connection as a
// plain error ("unable to send request: ..."), with no result code.
func isNetworkError(err error) bool {
	var le *ldap.Error
	if err != nil && !errors.As(err, &le) {
		return true
	}
	return ldap.IsErrorWithCode(err, ldap.ErrorNetwork) ||
		ldap.IsErrorWithCode(err, ldap.LDAPResultServerDown) ||
		ldap.IsErrorWithCode(err, ldap.LDAPResultUnavailable) ||
		ldap.IsErrorWithCode(err, ldap.LDAPResultBusy)
}

func classify(err error) error {
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case ldap.IsErrorWithCode(err, ldap.LDAPResultAssertionFailed),
		ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchAttribute),
		ldap.IsErrorWithCode(err, ldap.LDAPResultEntryAlreadyExists):
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}

// IsTransient says whether err is worth retrying later as it is.
func IsTransient(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrConflict)
}

// Search returns the entries below base matching filter.
func (s *Store) Search(base string, scope int, filter string, attrs []string) ([]*ldap.Entry, error) {
	var out []*ldap.Entry
	err := s.do(true, func(c *ldap.Conn) error {
		req := ldap.NewSearchRequest(base, scope, ldap.NeverDerefAliases, 0, 0, false, filter, attrs, nil)
		res, err := c.Search(req)
		if err != nil {
			return err
		}
		out = res.Entries
		return nil
	})
	return out, err
}

// Get reads one entry; ErrNotFound when it does not exist.
func (s *Store) Get(dn string, attrs ...string) (*ldap.Entry, error) {
	es, err := s.Search(dn, ldap.ScopeBaseObject, "(objectClass=*)", attrs)
	if err != nil {
		return nil, err
	}
	if len(es) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, dn)
	}
	return es[0], nil
}

// GetLeaf reads the backup leaf at dn, with ParseLeaf's checks.
func (s *Store) GetLeaf(dn string) (Leaf, error) {
	e, err := s.Get(dn, "*")
	if err != nil {
		return Leaf{}, err
	}
	return ParseLeaf(s.Tree, e)
}

// Add creates an entry; ErrConflict if it exists.
func (s *Store) Add(req *ldap.AddRequest) error {
	return s.do(false, func(c *ldap.Conn) error { return c.Add(req) })
}

// Delete removes an entry; deleting a missing entry is not an error (idempotent).
func (s *Store) Delete(dn string) error {
	err := s.do(false, func(c *ldap.Conn) error { return c.Del(ldap.NewDelRequest(dn, nil)) })
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// DeleteIf removes an entry only if it matches the assertion filter.
func (s *Store) DeleteIf(dn, assert string) error {
	ctrl, err := assertion(assert)
	if err != nil {
		return err
	}
	return s.do(false, func(c *ldap.Conn) error {
		return c.Del(ldap.NewDelRequest(dn, []ldap.Control{ctrl}))
	})
}

// Modify applies req as it is (one atomic operation).
func (s *Store) Modify(req *ldap.ModifyRequest) error {
	return s.do(false, func(c *ldap.Conn) error { return c.Modify(req) })
}

// Update replaces the given attributes in one atomic modify, but only if the entry
// matches the assertion filter (compare-and-swap). An empty value list deletes the
// attribute. The loser of a race gets ErrConflict.
func (s *Store) Update(dn, assert string, replace map[string][]string) error {
	req := ldap.NewModifyRequest(dn, nil)
	if assert != "" {
		ctrl, err := assertion(assert)
		if err != nil {
			return err
		}
		req.Controls = append(req.Controls, ctrl)
	}
	for _, name := range sortedAttrNames(replace) {
		req.Replace(name, replace[name])
	}
	return s.Modify(req)
}

func assertion(filter string) (ldap.Control, error) {
	pkt, err := ldap.CompileFilter(filter)
	if err != nil {
		return nil, fmt.Errorf("assertion filter %q: %w", filter, err)
	}
	return ldap.NewControlString(assertionControlOID, true, string(pkt.Bytes())), nil
}

// SubtreeEntries returns dn and everything below it, parents first.
func (s *Store) SubtreeEntries(dn string) ([]*ldap.Entry, error) {
	return s.Search(dn, ldap.ScopeWholeSubtree, "(objectClass=*)", []string{"*"})
}

// Ping checks that the server answers (for health endpoints).
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.Search("", ldap.ScopeBaseObject, "(objectClass=*)", []string{"1.1"})
	return err
}

func sortedAttrNames(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ModeChange is a compare-and-swap of a leaf's mode: it applies only while the leaf
// is in mode From (and, if set, State FromState), and writes mode, State and the
// other values in one modify, so no reader ever sees half of it.
type ModeChange struct {
	DN            string
	From, To      string
	FromState     string   // "" = any
	State         string   // "" = leave
	ReturnValue   *int     // nil = leave
	ExecutionTime []string // nil = leave; else the full new set
	// Extra replaces further attributes in the same modify (an empty list
	// deletes the attribute), e.g. the description a restore publishes.
	Extra map[string][]string
}

// ChangeMode applies c atomically; ErrConflict if the leaf is no longer in c.From.
func (s *Store) ChangeMode(c ModeChange) error {
	assert := modeAssertion(c.From, c.FromState)
	rep := map[string][]string{AttrMode: {c.To}}
	if c.State != "" {
		rep[AttrState] = []string{c.State}
	}
	if c.ReturnValue != nil {
		rep[AttrReturnValue] = []string{strconv.Itoa(*c.ReturnValue)}
	}
	if c.ExecutionTime != nil {
		rep[AttrExecutionTime] = c.ExecutionTime
	}
	for k, v := range c.Extra {
		rep[k] = v
	}
	return s.Update(c.DN, assert, rep)
}
