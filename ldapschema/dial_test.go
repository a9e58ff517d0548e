package ldapschema_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"gopkg.in/yaml.v3"

	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, der := sign(t, &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a server certificate and its key, both PEM, valid for the
// given IP addresses and DNS names.
func (ca *testCA) issue(t *testing.T, ips []net.IP, names []string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, der := sign(t, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "slapd under test"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  ips,
		DNSNames:     names,
	}, ca)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}

// sign makes a key and a certificate (DER) for tmpl, valid from an hour ago
// for a day, signed by ca or, when ca is nil, by the new key itself.
func sign(t *testing.T, tmpl *x509.Certificate, ca *testCA) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	parent, parentKey := tmpl, key
	if ca != nil {
		parent, parentKey = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsSlapd is a slapd whose ldap:// listener offers StartTLS with a
// certificate for 127.0.0.1 and ldap.test, issued by a CA made for the test.
// It returns the server and the CA's PEM file.
func tlsSlapd(t *testing.T) (*testenv.Slapd, string) {
	t.Helper()
	s := testenv.SlapdFor(t, testenv.SlapdOptions{})
	dir := t.TempDir()
	ca := newCA(t, "stoney conductor test CA")
	cert, key := ca.issue(t, []net.IP{net.ParseIP("127.0.0.1")}, []string{"ldap.test"})
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	err := s.ModifyConfig(`dn: cn=config
changetype: modify
replace: olcTLSCACertificateFile
olcTLSCACertificateFile: ` + caFile + `
-
replace: olcTLSCertificateFile
olcTLSCertificateFile: ` + writeFile(t, dir, "server.pem", cert) + `
-
replace: olcTLSCertificateKeyFile
olcTLSCertificateKeyFile: ` + writeFile(t, dir, "server.key", key) + `
`)
	if err != nil {
		t.Fatal(err)
	}
	return s, caFile
}

// overTLS binds as the root DN after StartTLS, checking the server's
// certificate against caFile.
func overTLS(s *testenv.Slapd, caFile string) ldapschema.StoreOptions {
	o := s.AdminOptions()
	o.StartTLS, o.CAFile = true, caFile
	return o
}

// The daemons' setting for a directory on another machine: StartTLS, the
// server certificate checked against the configured CA, then a simple bind.
func TestDialStartTLSWithCAFile(t *testing.T) {
	s, caFile := tlsSlapd(t)
	for _, name := range []string{"", "127.0.0.1", "ldap.test"} {
		o := overTLS(s, caFile)
		o.ServerName = name
		st, err := ldapschema.Dial(o)
		if err != nil {
			t.Fatalf("serverName %q: %v", name, err)
		}
		if _, err := st.Get(st.Tree.VirtualMachines(), "1.1"); err != nil {
			t.Errorf("serverName %q: read over TLS: %v", name, err)
		}
		st.Close()
	}

	// The watch dials its own connection, with the same protection.
	st := testenv.DialStore(t, overTLS(s, caFile))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	synced := false
	st.Watch(ctx, ldapschema.WatchOptions{Base: st.Tree.VirtualMachines(), Filter: "(objectClass=*)",
		OnError: func(err error) { t.Errorf("watch over TLS: %v", err); cancel() },
	}, func(ev ldapschema.Event) {
		if ev.Kind == ldapschema.EventSynced {
			synced = true
			cancel()
		}
	})
	if !synced {
		t.Error("the watch over TLS never finished its refresh")
	}
}

// A server whose certificate the CA file does not vouch for is refused
// before the password is sent, with an error that says why.
func TestDialStartTLSRefusesOtherCA(t *testing.T) {
	s, _ := tlsSlapd(t)
	otherCA := writeFile(t, t.TempDir(), "other-ca.pem", newCA(t, "some other CA").pem)
	_, err := ldapschema.Dial(overTLS(s, otherCA))
	if err == nil {
		t.Fatal("StartTLS succeeded with a CA that did not sign the server's certificate")
	}
	t.Logf("wrong CA: %v", err)
	for _, want := range []string{"StartTLS with " + s.URL, "certificate signed by unknown authority"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if ldapschema.IsTransient(err) {
		t.Error("a certificate the CA does not vouch for is classified as transient")
	}
}

func TestDialStartTLSRefusesOtherName(t *testing.T) {
	s, caFile := tlsSlapd(t)
	o := overTLS(s, caFile)
	o.ServerName = "ldap.example.com"
	_, err := ldapschema.Dial(o)
	if err == nil || !strings.Contains(err.Error(), "not ldap.example.com") {
		t.Fatalf("want a refusal naming ldap.example.com, got %v", err)
	}
	t.Logf("wrong name: %v", err)
}

func TestDialBadCAFile(t *testing.T) {
	s, _ := tlsSlapd(t)
	dir := t.TempDir()
	for file, want := range map[string]string{
		filepath.Join(dir, "missing.pem"):                       "read CA file",
		writeFile(t, dir, "empty.pem", []byte("no PEM here\n")): "holds no certificate",
	} {
		_, err := ldapschema.Dial(ldapschema.StoreOptions{URL: s.URL, Base: s.Base, StartTLS: true, CAFile: file})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CA file %s: want an error saying %q, got %v", filepath.Base(file), want, err)
		}
	}
}

// Passwords come from a file (a trailing newline, as editors leave it, is
// dropped); a YAML config cannot carry one.
func TestPasswordFile(t *testing.T) {
	s, _ := tlsSlapd(t)
	dir := t.TempDir()
	opts := ldapschema.StoreOptions{URL: s.URL, BindDN: s.AdminDN, Base: s.Base}

	opts.PasswordFile = writeFile(t, dir, "pw", []byte(s.AdminPassword+"\n"))
	st, err := ldapschema.Dial(opts)
	if err != nil {
		t.Fatalf("password file with a newline: %v", err)
	}
	st.Close()

	opts.PasswordFile = writeFile(t, dir, "wrong", []byte("not the password"))
	if _, err := ldapschema.Dial(opts); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) ||
		!strings.Contains(err.Error(), "bind as "+s.AdminDN) {
		t.Errorf("wrong password: want invalid credentials naming the bind DN, got %v", err)
	}
	opts.PasswordFile = filepath.Join(dir, "missing")
	if _, err := ldapschema.Dial(opts); err == nil || !strings.Contains(err.Error(), "read LDAP password file") {
		t.Errorf("missing password file: got %v", err)
	}

	var cfg struct {
		LDAP ldapschema.StoreOptions `yaml:"ldap"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte("ldap:\n  url: ldap://x\n  password: secret\n")))
	dec.KnownFields(true) // as controld and nodebackupd read their configs
	if err := dec.Decode(&cfg); err == nil {
		t.Errorf("a password in the YAML was accepted (Password = %q)", cfg.LDAP.Password)
	}
	dec = yaml.NewDecoder(bytes.NewReader([]byte("ldap:\n  url: ldap://x\n  passwordFile: /etc/stoney-conductor/x.password\n  timeout: 20s\n")))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil || cfg.LDAP.PasswordFile != "/etc/stoney-conductor/x.password" || cfg.LDAP.Timeout != 20*time.Second {
		t.Errorf("passwordFile and timeout from YAML: %+v, %v", cfg.LDAP, err)
	}
}

// On the LDAP server itself a daemon may use ldapi:// without a bind DN: the
// server knows the peer's uid (SASL EXTERNAL) and maps it to an identity. The
// test server lets the uid running the test manage everything, so a write
// proves the bind took place (anonymous may only read).
func TestDialLDAPI(t *testing.T) {
	s := testenv.SlapdFor(t, testenv.SlapdOptions{})
	st := testenv.DialStore(t, ldapschema.StoreOptions{URL: s.LDAPIURL, Base: s.Base})
	if err := st.Add(ldapschema.NewVMAddRequest(st.Tree, ldapschema.VM{Name: "vm-ldapi", Node: "h1"})); err != nil {
		t.Fatalf("write over ldapi with SASL EXTERNAL: %v", err)
	}

	// Without a bind (anonymous over TCP) the same write is refused: the
	// success above is the EXTERNAL identity's.
	anon := testenv.DialStore(t, ldapschema.StoreOptions{URL: s.URL, Base: s.Base})
	err := anon.Add(ldapschema.NewVMAddRequest(anon.Tree, ldapschema.VM{Name: "vm-anon", Node: "h1"}))
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) && !ldap.IsErrorWithCode(err, ldap.LDAPResultStrongAuthRequired) {
		t.Errorf("anonymous write: want it refused, got %v", err)
	}
}

// The bind password and the directory never cross the network in plain
// text unless the config says so in as many words: ldap:// to another
// machine without StartTLS is refused before any connection is made.
func TestPlaintextLDAPToRemoteIsRefused(t *testing.T) {
	for _, u := range []string{"ldap://ldap.example.org", "ldap://10.1.2.3:389", "ldap://[2001:db8::1]:389", "LDAP://ldap.example.org/"} {
		o := ldapschema.StoreOptions{URL: u, BindDN: "cn=x", Password: "secret", Base: "o=x"}
		if err := o.CheckTransport(); !errors.Is(err, ldapschema.ErrPlaintextToRemote) {
			t.Errorf("%s: want it refused, got %v", u, err)
		}
		if _, err := ldapschema.Dial(o); !errors.Is(err, ldapschema.ErrPlaintextToRemote) || ldapschema.IsTransient(err) {
			t.Errorf("Dial %s: want a permanent refusal, got %v", u, err)
		}
	}
	// The refusal tells how to fix it.
	err := ldapschema.StoreOptions{URL: "ldap://ldap.example.org"}.CheckTransport()
	for _, want := range []string{"startTLS: true", "insecurePlaintextToRemote: true"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %v does not mention %s", err, want)
		}
	}
}

// TLS (StartTLS or ldaps), this machine (loopback, localhost, ldapi) and the
// explicit key pass the rule.
func TestPlaintextLDAPRuleAccepts(t *testing.T) {
	for _, o := range []ldapschema.StoreOptions{
		{URL: "ldap://ldap.example.org", StartTLS: true},
		{URL: "ldaps://ldap.example.org"},
		{URL: "ldapi:///"},
		{URL: "ldapi://%2Fvar%2Frun%2Fslapd%2Fldapi"},
		{URL: "ldap://127.0.0.1:389"},
		{URL: "ldap://127.0.0.53"},
		{URL: "ldap://[::1]:389"},
		{URL: "ldap://localhost"},
		{URL: "ldap://LocalHost:1389/"},
		{URL: "ldap:///"},
		{URL: "ldap://ldap.example.org", InsecurePlaintextToRemote: true},
	} {
		if err := o.CheckTransport(); err != nil {
			t.Errorf("%+v: refused: %v", o, err)
		}
	}

	// Real dials: a loopback server by name, and with the key a remote one is
	// at least tried (the name does not resolve: unavailable, not refused).
	s := testenv.SlapdFor(t, testenv.SlapdOptions{})
	byName := strings.Replace(s.URL, "127.0.0.1", "localhost", 1)
	st, err := ldapschema.Dial(ldapschema.StoreOptions{URL: byName, BindDN: s.AdminDN, Password: s.AdminPassword, Base: s.Base})
	if err != nil {
		t.Fatalf("%s: %v", byName, err)
	}
	st.Close()
	_, err = ldapschema.Dial(ldapschema.StoreOptions{URL: "ldap://remote.invalid:389", Base: "o=x", InsecurePlaintextToRemote: true})
	if !errors.Is(err, ldapschema.ErrUnavailable) {
		t.Fatalf("with insecurePlaintextToRemote the dial must be tried: %v", err)
	}

	var cfg struct {
		LDAP ldapschema.StoreOptions `yaml:"ldap"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte("ldap:\n  url: ldap://ldap.example.org\n  insecurePlaintextToRemote: true\n")))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil || !cfg.LDAP.InsecurePlaintextToRemote {
		t.Fatalf("insecurePlaintextToRemote from YAML: %+v %v", cfg.LDAP, err)
	}
}
