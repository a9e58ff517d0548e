package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// SlapdOptions configure StartSlapd.
type SlapdOptions struct {
	// Dir holds the server's configuration, database, socket and log. Required;
	// usually a test's temporary directory. It must not hold a server yet.
	Dir string
	// Base is the database suffix; default o=stepping-stone,c=ch.
	Base string
	// SchemaLDIF is loaded after core, cosine, inetorgperson and nis; default
	// ldapschema.SchemaLDIF.
	SchemaLDIF []byte
	// NoSync turns off fsync in the database: faster, and safe unless the
	// machine itself crashes (a killed slapd loses nothing).
	NoSync bool
	// Debug is slapd's -d level, whose output goes to the log; default "0"
	// (errors only). "stats" logs every operation.
	Debug string
	// DebianInit builds cn=config from the Debian slapd package's own
	// template (/usr/share/slapd/slapd.init.ldif), as a fresh `apt install
	// slapd` does: back_mdb only, no syncprov, no stoney schema (SchemaLDIF
	// is ignored), Debian's indexes, access rules and size limit of 500.
	// For following the operator guide, which adds the rest with ldapmodify.
	DebianInit bool
}

// Slapd is a running (or stopped) throwaway OpenLDAP server: a child process
// with its own cn=config, an mdb database with the syncprov overlay, the
// indexes the daemons search by and no size limit.
type Slapd struct {
	URL           string // ldap://127.0.0.1:PORT
	LDAPIURL      string // ldapi:// on a socket in Dir (or a short temp dir)
	Base          string
	AdminDN       string // the database's root DN
	AdminPassword string
	Dir           string
	LogPath       string // slapd's output, appended across restarts
	Tree          ldapschema.Tree

	opts    SlapdOptions
	confDir string
	port    int
	sockDir string // != "" if the socket lives outside Dir (path length)
	pwFile  string
	mu      sync.Mutex
	running *slapdProcess // nil when stopped
}

// slapdProcess is one run of the slapd child.
type slapdProcess struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has been waited for
	err  error         // cmd.Wait's result, valid after done is closed
	log  *os.File
}

// StartSlapd builds a cn=config with slapadd, starts slapd as a child and
// waits until it answers, then adds the base entry and the containers of the
// stoney cloud layout (ldapschema.Tree.Containers). Backup configurations are
// the caller's. Call Stop when done.
func StartSlapd(opts SlapdOptions) (*Slapd, error) {
	if opts.Dir == "" {
		return nil, errors.New("testenv: SlapdOptions.Dir is required")
	}
	if opts.Base == "" {
		opts.Base = "o=stepping-stone,c=ch"
	}
	if opts.SchemaLDIF == nil {
		opts.SchemaLDIF = ldapschema.SchemaLDIF
	}
	if opts.Debug == "" {
		opts.Debug = "0"
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	s := &Slapd{
		Base:          opts.Base,
		AdminDN:       "cn=admin," + opts.Base,
		AdminPassword: hex.EncodeToString(pw),
		Dir:           dir,
		LogPath:       filepath.Join(dir, "slapd.log"),
		Tree:          ldapschema.Tree{Base: opts.Base},
		opts:          opts,
		confDir:       filepath.Join(dir, "slapd.d"),
		pwFile:        filepath.Join(dir, "admin.pw"),
	}
	if _, err := os.Stat(s.confDir); err == nil {
		return nil, fmt.Errorf("testenv: %s holds a slapd already", dir)
	}
	for _, d := range []string{s.confDir, filepath.Join(dir, "db")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(s.pwFile, []byte(s.AdminPassword), 0o600); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "ldapi")
	if len(sock) > 100 { // sun_path holds 108 bytes
		if s.sockDir, err = os.MkdirTemp("", "slapd-"); err != nil {
			return nil, err
		}
		sock = filepath.Join(s.sockDir, "ldapi")
		defer func() {
			if !s.Running() {
				os.RemoveAll(s.sockDir)
			}
		}()
	}
	s.LDAPIURL = "ldapi://" + url.PathEscape(sock)

	config, err := s.configLDIF()
	if err != nil {
		return nil, err
	}
	configPath := filepath.Join(dir, "config.ldif")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		return nil, err
	}
	if out, err := exec.Command(sbin("slapadd"), "-n0", "-F", s.confDir, "-l", configPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("testenv: slapadd -n0: %v: %s", err, out)
	}

	// The port is picked free, then handed to slapd: another process may take
	// it in between, so try again with a new one.
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		s.URL = "ldap://127.0.0.1:" + strconv.Itoa(s.port)
		if err = s.start(); err == nil {
			break
		}
		if attempt == 2 {
			return nil, err
		}
	}
	if err := s.seed(); err != nil {
		_ = s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Slapd) configLDIF() (string, error) {
	if s.opts.DebianInit {
		return s.debianConfigLDIF()
	}
	var b strings.Builder
	// Root over ldapi (SASL EXTERNAL) may read and change cn=config, which
	// helps when debugging a test by hand.
	peer := fmt.Sprintf("gidNumber=%d+uidNumber=%d,cn=peercred,cn=external,cn=auth", os.Getgid(), os.Getuid())
	fmt.Fprintf(&b, `dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: %[1]s/slapd.pid
olcArgsFile: %[1]s/slapd.args
olcLogLevel: none

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: syncprov

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

`, s.Dir)
	for _, name := range []string{"core", "cosine", "inetorgperson", "nis"} {
		data, err := os.ReadFile(filepath.Join("/etc/ldap/schema", name+".ldif"))
		if err != nil {
			return "", fmt.Errorf("testenv: schema %s (is slapd installed?): %w", name, err)
		}
		b.Write(bytes.TrimSpace(data))
		b.WriteString("\n\n")
	}
	b.Write(bytes.TrimSpace(s.opts.SchemaLDIF))
	b.WriteString("\n\n")
	noSync := ""
	if s.opts.NoSync {
		noSync = "olcDbNoSync: TRUE\n"
	}
	fmt.Fprintf(&b, `dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcSizeLimit: unlimited
olcAccess: {0}to * by dn.exact=%[1]s manage by * break
olcAccess: {1}to * by * read

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by dn.exact=%[1]s manage by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: %[2]s
olcRootDN: %[3]s
olcRootPW: %[4]s
olcDbDirectory: %[5]s
olcDbMaxSize: 4294967296
olcSizeLimit: unlimited
olcDbIndex: objectClass eq
olcDbIndex: ou eq
olcDbIndex: sstNode eq
olcDbIndex: sstProvisioningMode eq
olcDbIndex: sstVirtualMachine eq
olcDbIndex: entryUUID eq
olcDbIndex: entryCSN eq
%[6]s
dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {0}syncprov
olcSpCheckpoint: 100 1
`, peer, s.Base, s.AdminDN, s.AdminPassword, filepath.Join(s.Dir, "db"), noSync)
	return b.String(), nil
}

// start runs slapd on s.port and waits until the admin can bind.
func (s *Slapd) start() error {
	if s.Running() {
		return errors.New("testenv: slapd is running already")
	}
	if s.sockDir != "" {
		if err := os.MkdirAll(s.sockDir, 0o700); err != nil {
			return err
		}
	}
	logFile, err := os.OpenFile(s.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(logFile, "=== %s slapd on %s\n", time.Now().Format(time.RFC3339Nano), s.URL)
	cmd := exec.Command(sbin("slapd"), "-d", s.opts.Debug, "-h", s.URL+"/ "+s.LDAPIURL, "-F", s.confDir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("testenv: start slapd: %w", err)
	}
	p := &slapdProcess{cmd: cmd, done: make(chan struct{}), log: logFile}
	// One goroutine waits for the child, so its exit is seen at once (no
	// polling) and it never lingers as a zombie.
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.running = p
	s.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-p.done:
			s.forget(p)
			return fmt.Errorf("testenv: slapd exited during start (%v); log:\n%s", p.err, tail(s.LogPath, 2000))
		default:
		}
		if c, err := s.dial(200 * time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.done
			s.forget(p)
			return fmt.Errorf("testenv: slapd did not answer within 15 s; log:\n%s", tail(s.LogPath, 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forget drops p after it exited.
func (s *Slapd) forget(p *slapdProcess) {
	s.mu.Lock()
	if s.running == p {
		s.running = nil
	}
	s.mu.Unlock()
	p.log.Close()
}

// seed adds the base entry and the containers of the layout.
func (s *Slapd) seed() error {
	c, err := s.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	base, err := baseEntry(s.Base)
	if err != nil {
		return err
	}
	if err := c.Add(base); err != nil {
		return fmt.Errorf("testenv: add %s: %w", s.Base, err)
	}
	for _, dn := range s.Tree.Containers() {
		req := ldap.NewAddRequest(dn, nil)
		req.Attribute(ldapschema.AttrObjectClass, []string{ldapschema.ClassTop, ldapschema.ClassOrganizationalUnit})
		req.Attribute(ldapschema.AttrOU, []string{firstRDNValue(dn)})
		if err := c.Add(req); err != nil {
			return fmt.Errorf("testenv: add %s: %w", dn, err)
		}
	}
	return nil
}

// baseEntry is the add request for the suffix entry, by its RDN's type.
func baseEntry(base string) (*ldap.AddRequest, error) {
	dn, err := ldap.ParseDN(base)
	if err != nil || len(dn.RDNs) == 0 || len(dn.RDNs[0].Attributes) != 1 {
		return nil, fmt.Errorf("testenv: base %q is not a simple DN", base)
	}
	typ, val := strings.ToLower(dn.RDNs[0].Attributes[0].Type), dn.RDNs[0].Attributes[0].Value
	req := ldap.NewAddRequest(base, nil)
	switch typ {
	case "o":
		req.Attribute("objectClass", []string{"top", "organization"})
		req.Attribute("o", []string{val})
	case "dc":
		req.Attribute("objectClass", []string{"top", "dcObject", "organization"})
		req.Attribute("dc", []string{val})
		req.Attribute("o", []string{val})
	case "ou":
		req.Attribute("objectClass", []string{"top", "organizationalUnit"})
		req.Attribute("ou", []string{val})
	case "c":
		req.Attribute("objectClass", []string{"top", "country"})
		req.Attribute("c", []string{val})
	default:
		return nil, fmt.Errorf("testenv: base %q: no object class known for %s=", base, typ)
	}
	return req, nil
}

func firstRDNValue(dn string) string {
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) == 0 {
		return ""
	}
	return parsed.RDNs[0].Attributes[0].Value
}

// Stop ends slapd with SIGTERM and waits for it (a clean shutdown writes the
// syncprov state). It is a no-op when slapd is not running.
func (s *Slapd) Stop() error {
	err := s.signal(syscall.SIGTERM, 15*time.Second)
	if s.sockDir != "" {
		os.RemoveAll(s.sockDir)
	}
	return err
}

// Kill ends slapd with SIGKILL and waits for it, as a crash would.
func (s *Slapd) Kill() error {
	return s.signal(syscall.SIGKILL, 15*time.Second)
}

// signal sends sig and waits for the exit; SIGKILL after grace.
func (s *Slapd) signal(sig syscall.Signal, grace time.Duration) error {
	s.mu.Lock()
	p := s.running
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	var err error
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		err = fmt.Errorf("testenv: slapd did not exit within %v of %v; killed", grace, sig)
	}
	s.forget(p)
	return err
}

// Restart stops slapd (if running) and starts it again on the same directory
// and port, so clients can reconnect to the same URL.
func (s *Slapd) Restart() error {
	if err := s.signal(syscall.SIGTERM, 15*time.Second); err != nil {
		return err
	}
	return s.start()
}

// Running reports whether the slapd child is up.
func (s *Slapd) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running != nil
}

// Dial connects over TCP and binds as the admin.
func (s *Slapd) Dial() (*ldap.Conn, error) {
	return s.dial(5 * time.Second)
}

func (s *Slapd) dial(timeout time.Duration) (*ldap.Conn, error) {
	c, err := ldap.DialURL(s.URL, ldap.DialWithDialer(&net.Dialer{Timeout: timeout}))
	if err != nil {
		return nil, err
	}
	c.SetTimeout(timeout)
	if err := c.Bind(s.AdminDN, s.AdminPassword); err != nil {
		c.Close()
		return nil, err
	}
	c.SetTimeout(0)
	return c, nil
}

// LDAPModify applies LDIF change records with the real ldapmodify, bound as
// the admin; the error carries ldapmodify's output.
func (s *Slapd) LDAPModify(ldif string) error {
	return s.ldapmodify(ldif)
}

// LDAPAdd adds LDIF content records with ldapmodify -a.
func (s *Slapd) LDAPAdd(ldif string) error {
	return s.ldapmodify(ldif, "-a")
}

func (s *Slapd) ldapmodify(ldif string, extra ...string) error {
	return ldapmodify(ldif, []string{"-x", "-H", s.URL, "-D", s.AdminDN, "-y", s.pwFile}, extra)
}

// ldapmodify runs the real tool on ldif with the connection's args and the
// caller's extra ones (named in the error, which carries the tool's output).
func ldapmodify(ldif string, args, extra []string) error {
	cmd := exec.Command("ldapmodify", append(args, extra...)...)
	cmd.Stdin = strings.NewReader(ldif)
	// Ignore the user's ldaprc and /etc/ldap/ldap.conf (TLS settings etc.).
	cmd.Env = append(os.Environ(), "LDAPNOINIT=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ldapmodify %s: %v: %s", strings.Join(extra, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// SlapAdd bulk-loads LDIF content records into the database offline, much
// faster than adding them over LDAP (for big fixtures). slapd must be stopped;
// Restart it afterwards.
func (s *Slapd) SlapAdd(ldif string) error {
	if s.Running() {
		return errors.New("testenv: SlapAdd needs slapd stopped")
	}
	f, err := os.CreateTemp(s.Dir, "slapadd-*.ldif")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(ldif); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// -w updates the contextCSN, so syncrepl clients see the new entries as
	// part of the current state.
	out, err := exec.Command(sbin("slapadd"), "-q", "-w", "-F", s.confDir, "-b", s.Base, "-l", f.Name()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testenv: slapadd: %v: %s", err, out)
	}
	return nil
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// sbin finds slapd's tools, which live in /usr/sbin, outside a normal user's PATH.
func sbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return filepath.Join("/usr/sbin", name)
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, 0)
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(f)
	return b.String()
}

// debianInitLDIF is the Debian slapd package's template for a new server.
const debianInitLDIF = "/usr/share/slapd/slapd.init.ldif"

// debianConfigLDIF is the Debian template with its placeholders filled in as
// the package's postinst does, and its paths moved into s.Dir.
func (s *Slapd) debianConfigLDIF() (string, error) {
	data, err := os.ReadFile(debianInitLDIF)
	if err != nil {
		return "", fmt.Errorf("testenv: Debian slapd template (is slapd installed?): %w", err)
	}
	peer := fmt.Sprintf("gidNumber=%d+uidNumber=%d,cn=peercred", os.Getgid(), os.Getuid())
	dbDir := "olcDbDirectory: " + filepath.Join(s.Dir, "db")
	if s.opts.NoSync {
		dbDir += "\nolcDbNoSync: TRUE"
	}
	r := strings.NewReplacer(
		"@SUFFIX@", s.Base,
		"@PASSWORD@", s.AdminPassword,
		"/var/run/slapd/", s.Dir+"/",
		"olcDbDirectory: /var/lib/ldap", dbDir,
		"gidNumber=0+uidNumber=0,cn=peercred", peer,
	)
	return r.Replace(string(data)), nil
}

// AdminPasswordFile is a file holding AdminPassword (no newline), for tools'
// -y option.
func (s *Slapd) AdminPasswordFile() string { return s.pwFile }

// ModifyConfig applies LDIF change records to cn=config (or the data) with
// the real ldapmodify over ldapi, bound by SASL EXTERNAL as the user running
// the test, whom the configuration lets manage everything. extra are more
// ldapmodify arguments (e.g. "-c"). The error carries ldapmodify's output.
func (s *Slapd) ModifyConfig(ldif string, extra ...string) error {
	return ldapmodify(ldif, []string{"-Q", "-H", s.LDAPIURL}, append([]string{"-Y", "EXTERNAL"}, extra...))
}
