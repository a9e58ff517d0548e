package web

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Config is the web: section of controld's YAML (deploy/controld.yaml
// explains every key).
type Config struct {
	Listen   string `yaml:"listen"`   // host:port; "" = no web UI
	CertFile string `yaml:"certFile"` // PEM certificate (chain) for HTTPS
	KeyFile  string `yaml:"keyFile"`  // its private key
	// AllowPlainHTTP serves without TLS on an address that is not loopback:
	// passwords and session cookies then cross the network readable.
	AllowPlainHTTP bool `yaml:"allowPlainHTTP"`
	// UserDN maps a login name to a DN: one %s, replaced by the escaped name,
	// e.g. uid=%s,ou=people,o=stepping-stone,c=ch. A name that is a DN is
	// taken as it is.
	UserDN      string        `yaml:"userDN"`
	IdleTimeout time.Duration `yaml:"idleTimeout"` // default 30m
}

// DefaultIdleTimeout ends a session nobody used for this long.
const DefaultIdleTimeout = 30 * time.Minute

// Enabled reports whether the config asks for a web UI.
func (c Config) Enabled() bool { return c.Listen != "" }

// TLS reports whether the UI serves HTTPS.
func (c Config) TLS() bool { return c.CertFile != "" }

// ErrPlainHTTP: the config would serve passwords in plain HTTP to the network.
var ErrPlainHTTP = errors.New("web: plain HTTP on an address that is not loopback")

// Check refuses a config that cannot work or would be unsafe.
func (c Config) Check() error {
	if !c.Enabled() {
		return nil
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("web: listen %q: %w", c.Listen, err)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("web: certFile and keyFile go together")
	}
	if c.UserDN != "" && strings.Count(c.UserDN, "%s") != 1 {
		return fmt.Errorf("web: userDN %q must hold %%s exactly once", c.UserDN)
	}
	if c.IdleTimeout < 0 {
		return errors.New("web: idleTimeout must not be negative")
	}
	if !c.TLS() && !c.AllowPlainHTTP && !loopback(host) {
		return fmt.Errorf("%w: %s; give certFile and keyFile, listen on 127.0.0.1 or ::1, "+
			"or accept it in so many words with allowPlainHTTP: true", ErrPlainHTTP, c.Listen)
	}
	return nil
}

// loopback: an address only this machine reaches. An empty host (every
// interface) is not.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ErrNoDN: the login name is not a DN and no userDN template is configured.
var ErrNoDN = errors.New("web: log in with a DN (no userDN is configured)")

// bindDN returns the DN a login name binds as.
func (c Config) bindDN(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", errors.New("web: empty login name")
	}
	if strings.Contains(name, "=") {
		dn, err := ldap.ParseDN(name)
		if err != nil || len(dn.RDNs) == 0 {
			return "", fmt.Errorf("web: %q is no DN", name)
		}
		return name, nil
	}
	if c.UserDN == "" {
		return "", ErrNoDN
	}
	return fmt.Sprintf(c.UserDN, ldap.EscapeDN(name)), nil
}
