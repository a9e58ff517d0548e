// Command nodebackupd is the node daemon of stoney conductor: one runs on every
// KVM host and carries out the backup steps of the VMs the directory places there.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/metrics"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
	"github.com/stoneycloud/stoney-conductor/libvirt"
	"github.com/stoneycloud/stoney-conductor/nodebackupd/node"
)

// config is the YAML file; deploy/nodebackupd.yaml explains every key.
type config struct {
	LDAP    ldapschema.StoreOptions `yaml:"ldap"`
	Node    string                  `yaml:"node"`
	Libvirt struct {
		URI string `yaml:"uri"`
	} `yaml:"libvirt"`
	Workers int `yaml:"workers"`
	// LeaseTTL is how long this host's lease (its heartbeat) holds unrenewed.
	LeaseTTL time.Duration `yaml:"leaseTTL"`
	// StateDir holds the steps' intent records; only root may write it.
	StateDir string `yaml:"stateDir"`
	// Snapshot is how a running VM's memory is saved: live or save.
	Snapshot string `yaml:"snapshot"`
	Live     struct {
		MaxTime   time.Duration `yaml:"maxTime"`
		MaxPasses int           `yaml:"maxPasses"`
		MaxPause  time.Duration `yaml:"maxPause"`
	} `yaml:"live"`
	// Storage is how retain keeps disks: full (default) or chunks.
	Storage format.Storage `yaml:"storage"`
	// Chunks schedules garbage collection and verify of chunk stores.
	Chunks node.StoreJobs `yaml:"chunks"`
	// QemuImg bounds every qemu-img call (zero keeps a default).
	QemuImg struct {
		QueryTimeout time.Duration `yaml:"queryTimeout"`
		CheckTimeout time.Duration `yaml:"checkTimeout"`
		DataTimeout  time.Duration `yaml:"dataTimeout"`
	} `yaml:"qemuImg"`
	Metrics struct {
		Listen string `yaml:"listen"` // host:port for /metrics and /healthz; "" = off
	} `yaml:"metrics"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
}

func loadConfig(path string) (config, error) {
	var c config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	dec := yaml.NewDecoder(bytesReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if c.Node == "" {
		if c.Node, err = os.Hostname(); err != nil {
			return c, err
		}
	}
	if c.Libvirt.URI == "" {
		c.Libvirt.URI = "qemu:///system"
	}
	mode, err := node.ParseSnapshotMode(c.Snapshot)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	c.Snapshot = string(mode)
	if c.Live.MaxTime < 0 || c.Live.MaxPasses < 0 || c.Live.MaxPause < 0 {
		return c, fmt.Errorf("%s: live.maxTime, maxPasses and maxPause must not be negative", path)
	}
	if c.Storage, err = format.ParseStorage(string(c.Storage)); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.Chunks.Check(); err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	if c.LDAP.URL == "" || c.LDAP.Base == "" {
		return c, fmt.Errorf("%s: ldap.url and ldap.base are required", path)
	}
	return c, nil
}

func main() {
	cfgPath := flag.String("config", "/etc/stoney-conductor/nodebackupd.yaml", "configuration file")
	flag.Parse()
	os.Exit(run(*cfgPath))
}

func run(cfgPath string) int {
	log := logrus.New()
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		log.WithError(err).Error("configuration")
		return 2
	}
	if err := setupLog(log, cfg.Log.Level, cfg.Log.Format); err != nil {
		log.WithError(err).Error("configuration")
		return 2
	}
	store, err := ldapschema.Dial(cfg.LDAP)
	if err != nil {
		log.WithError(err).Error("directory")
		return 1
	}
	defer store.Close()
	hv, err := libvirt.Open(cfg.Libvirt.URI)
	if err != nil {
		log.WithError(err).Error("hypervisor")
		return 1
	}
	defer hv.Close()
	// Unarmed in production; a crash harness arms it through the environment.
	seam, err := hostio.FromEnv()
	if err != nil {
		log.WithError(err).Error("configuration")
		return 2
	}
	hv.SetSeam(seam)
	format.SetImageTimeouts(format.ImageTimeouts{Query: cfg.QemuImg.QueryTimeout,
		Check: cfg.QemuImg.CheckTimeout, Data: cfg.QemuImg.DataTimeout})
	if cfg.StateDir == "" {
		cfg.StateDir = node.DefaultStateDir
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		log.WithError(err).Error("state directory")
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.WithFields(logrus.Fields{"node": cfg.Node, "ldap": cfg.LDAP.URL, "libvirt": cfg.Libvirt.URI}).Info("nodebackupd starting")
	reg := prometheus.NewRegistry()
	m := metrics.NewNode(reg)
	if cfg.Metrics.Listen != "" {
		go metrics.Serve(ctx, cfg.Metrics.Listen, reg, func(ctx context.Context) error {
			if err := store.Ping(ctx); err != nil {
				return fmt.Errorf("directory: %w", err)
			}
			// Any answer from libvirt but a lost connection will do.
			if _, err := hv.Domain("stoney-health-probe"); err != nil && !errors.Is(err, libvirt.ErrDomainNotFound) {
				return fmt.Errorf("libvirt: %w", err)
			}
			return nil
		}, log)
	}
	agent := node.New(node.Options{Node: cfg.Node, Store: store, Hypervisor: hv, Log: log, Workers: cfg.Workers, LeaseTTL: cfg.LeaseTTL,
		StateDir: cfg.StateDir, Seam: seam, Storage: cfg.Storage, Snapshot: node.SnapshotMode(cfg.Snapshot),
		LiveBound: libvirt.PauseBound{Time: cfg.Live.MaxTime, Passes: cfg.Live.MaxPasses, MaxPause: cfg.Live.MaxPause},
		StoreJobs: cfg.Chunks, OnStoreJob: m.StoreJob,
		OnStep: m.Step, OnWatchError: func(error) { m.WatchReconnect() }, OnReconcileError: m.ReconcileError})
	if err := agent.Run(ctx); err != nil {
		log.WithError(err).Error("stopped")
		return 1
	}
	return 0
}
