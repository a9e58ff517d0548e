package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/controld/web"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

const defaultConfig = "/etc/stoney-conductor/controld.yaml"

// config is the YAML file; deploy/controld.yaml explains every key.
type config struct {
	LDAP    ldapschema.StoreOptions `yaml:"ldap"`
	Workers int                     `yaml:"workers"`
	Log     struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`

	// Scheduled backups and retention.
	Timezone             string         `yaml:"timezone"`      // IANA name; default the machine's zone
	CatchUpWindow        *time.Duration `yaml:"catchUpWindow"` // nil: the default; 0: off
	MaxConcurrentPerHost int            `yaml:"maxConcurrentPerHost"`

	// Crash safety: how long a leaf may wait in a mode (by mode name; the
	// others keep their defaults), how long after its lease expired a node
	// counts as gone, and how long controld's own lease holds.
	Deadlines   map[string]time.Duration `yaml:"deadlines"`
	NodeTimeout time.Duration            `yaml:"nodeTimeout"`
	LeaseTTL    time.Duration            `yaml:"leaseTTL"`

	Metrics struct {
		Listen string `yaml:"listen"` // host:port for /metrics and /healthz; "" = off
	} `yaml:"metrics"`

	Web web.Config `yaml:"web"` // `controld web`; off unless web.listen is set

	loc *time.Location // Timezone, loaded
}

// limits merges the configured deadlines over the defaults.
func (c config) limits() (fsm.Limits, error) {
	out := fsm.Limits{}
	for m, d := range control.DefaultLimits {
		out[m] = d
	}
	for name, d := range c.Deadlines {
		m, err := fsm.ParseMode(name)
		if err != nil || (!m.IsRequest() && !m.IsRunning()) {
			return nil, usagef("deadlines: %q is not a mode that waits for a node", name)
		}
		out[m] = d
	}
	return out, nil
}

// location is the zone cron fields are read in.
func (c config) location() *time.Location {
	if c.loc == nil {
		return time.Local
	}
	return c.loc
}

// nightly turns the scheduling keys into the controller's options.
func (c config) nightly() *control.NightlyOptions {
	window := control.DefaultCatchUpWindow
	if c.CatchUpWindow != nil {
		window = *c.CatchUpWindow
	}
	return &control.NightlyOptions{Location: c.location(), CatchUpWindow: window}
}

func loadConfig(path string) (config, error) {
	var c config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, usagef("%v", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, usagef("%s: %v", path, err)
	}
	if c.LDAP.URL == "" || c.LDAP.Base == "" {
		return c, usagef("%s: ldap.url and ldap.base are required", path)
	}
	if c.Timezone != "" {
		if c.loc, err = time.LoadLocation(c.Timezone); err != nil {
			return c, usagef("%s: timezone: %v", path, err)
		}
	}
	if c.CatchUpWindow != nil && *c.CatchUpWindow < 0 {
		return c, usagef("%s: catchUpWindow must not be negative", path)
	}
	if c.MaxConcurrentPerHost < 0 {
		return c, usagef("%s: maxConcurrentPerHost must not be negative", path)
	}
	if _, err := c.limits(); err != nil {
		return c, usagef("%s: %v", path, err)
	}
	if err := c.Web.Check(); err != nil {
		return c, usagef("%s: %v", path, err)
	}
	return c, nil
}

// common flags of every command that talks to the directory
type common struct {
	config string
}

// flags is a command's flag set with the common flags registered.
type flags struct {
	*flag.FlagSet
	common
}

// newFlags starts a command's flags; usage is its usage line(s).
func newFlags(name, usage string) *flags {
	f := &flags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError)}
	f.common.register(f.FlagSet)
	f.Usage = func() {
		fmt.Fprintln(f.Output(), usage)
		f.PrintDefaults()
	}
	return f
}

// parse reads args and wants between min and max arguments (max < 0: no
// limit); what says what they are when the count is wrong.
func (f *flags) parse(args []string, min, max int, what string) error {
	if err := f.Parse(args); err != nil {
		return usageError{err}
	}
	if n := f.NArg(); n < min || max >= 0 && n > max {
		f.Usage()
		return usagef("%s", what)
	}
	return nil
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", envOr("CONTROLD_CONFIG", defaultConfig), "configuration file (env CONTROLD_CONFIG)")
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// open loads the config and dials the directory.
func (c *common) open() (config, *ldapschema.Store, error) {
	cfg, err := loadConfig(c.config)
	if err != nil {
		return cfg, nil, err
	}
	store, err := ldapschema.Dial(cfg.LDAP)
	if err != nil {
		return cfg, nil, backendError{fmt.Errorf("directory %s: %w", cfg.LDAP.URL, err)}
	}
	return cfg, store, nil
}

func newLogger(level, format string) (*logrus.Logger, error) {
	log := logrus.New()
	if level != "" {
		l, err := logrus.ParseLevel(level)
		if err != nil {
			return nil, usagef("log level: %v", err)
		}
		log.SetLevel(l)
	}
	if format == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	}
	return log, nil
}
