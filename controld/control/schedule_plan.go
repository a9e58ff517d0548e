package control

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// PlanStatus says whether and why a VM is or is not backed up on schedule.
type PlanStatus string

// The statuses of a Plan.
const (
	PlanScheduled   PlanStatus = "scheduled"
	PlanExcluded    PlanStatus = "excluded"    // sstBackupExcludeFromBackup TRUE
	PlanInactive    PlanStatus = "inactive"    // sstCronActive FALSE
	PlanUnscheduled PlanStatus = "unscheduled" // no level carries cron fields
	PlanNoConfig    PlanStatus = "no-config"   // neither VM, pool nor global has a backup configuration
	PlanInvalid     PlanStatus = "invalid"     // the configuration or schedule cannot be read; see Err
)

// Plan is what nightly operation intends for one VM.
//
// The effective configuration is the first of the VM's, its pool's and the
// global ou=backup that carries the backup class, whole, as in the original.
// It decides exclusion and the number of iterations. The schedule comes from
// the same entry, unless that entry has no cron fields at all: then from the
// next level that has. So the seed's exclusion entry (the backup class and
// sstBackupExcludeFromBackup only) keeps the pool's or global schedule once the
// VM is included again, and an entry with cron fields and sstCronActive FALSE
// switches the VM's schedule off.
type Plan struct {
	VM, Host, Pool string
	Status         PlanStatus
	Err            error     // why, when Status is PlanInvalid
	Source         string    // DN of the effective configuration
	ScheduleSource string    // DN the cron fields came from
	Level          string    // "vm", "pool" or "global": where Source is
	ScheduleLevel  string    // the same for ScheduleSource
	Schedule       *Schedule // when Status is PlanScheduled
	Iterations     int       // 0 when there is no readable configuration
	Next           time.Time // the next planned run; zero unless scheduled
}

// BackupConfigAttrs are the attributes of a backup configuration entry that
// ldapschema.ParseBackupConfig reads.
var BackupConfigAttrs = []string{
	ldapschema.AttrCronMinute, ldapschema.AttrCronHour, ldapschema.AttrCronDay, ldapschema.AttrCronMonth,
	ldapschema.AttrCronDayOfWeek, ldapschema.AttrCronActive,
	ldapschema.AttrBackupRootDirectory, ldapschema.AttrBackupRetainDirectory, ldapschema.AttrBackupRamDiskLocation,
	ldapschema.AttrRestoreVMWithoutState, ldapschema.AttrBackupExcludeFromBackup, ldapschema.AttrBackupNumberOfIterations,
	ldapschema.AttrBandwidthMerge, ldapschema.AttrForceStart,
	ldapschema.AttrDiskImagePermission, ldapschema.AttrDiskImageFormat, ldapschema.AttrDiskImageOwner,
	ldapschema.AttrDiskImageGroup, ldapschema.AttrDiskImageDirectoryOwner, ldapschema.AttrDiskImageDirectoryGroup,
	ldapschema.AttrDiskImageDirectoryPermission,
}

// cfgInfo is one backup configuration entry, parsed once when it changes.
type cfgInfo struct {
	dn       string
	cfg      ldapschema.BackupConfig
	err      error
	sched    *Schedule
	schedErr error
}

func newCfgInfo(e *ldap.Entry, loc *time.Location) *cfgInfo {
	ci := &cfgInfo{dn: e.DN}
	ci.cfg, ci.err = ldapschema.ParseBackupConfig(e)
	if ci.err == nil && ci.cfg.HasCron() && ci.cfg.CronActive {
		ci.sched, ci.schedErr = ParseSchedule(SpecOf(ci.cfg), loc)
	}
	return ci
}

type vmInfo struct{ host, pool string }

// view is the directory as scheduling sees it: the VMs, and the backup
// configurations by level. It does no I/O; put and remove feed it entries
// from a search or a watch. Not safe for concurrent use.
type view struct {
	tree    ldapschema.Tree
	loc     *time.Location
	vms     map[string]vmInfo
	vmCfg   map[string]*cfgInfo // by VM
	poolCfg map[string]*cfgInfo // by pool
	global  *cfgInfo
	poolVMs map[string]map[string]bool
}

func newView(tree ldapschema.Tree, loc *time.Location) *view {
	return &view{
		tree: tree, loc: loc, vms: map[string]vmInfo{}, vmCfg: map[string]*cfgInfo{},
		poolCfg: map[string]*cfgInfo{}, poolVMs: map[string]map[string]bool{},
	}
}

// entryKind is where an entry sits in the layout, as far as scheduling cares.
type entryKind int

const (
	kindOther entryKind = iota
	kindVM
	kindVMConfig
	kindPoolConfig
	kindGlobalConfig
)

// classify reads an entry's place from its DN alone (deletes carry no entry).
func (v *view) classify(dn string) (entryKind, string) {
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) < 2 {
		return kindOther, ""
	}
	first := parsed.RDNs[0].Attributes
	if len(first) != 1 {
		return kindOther, ""
	}
	if strings.EqualFold(first[0].Type, ldapschema.AttrVirtualMachine) {
		if vm, err := ldapschema.ParseVMDN(v.tree, dn); err == nil {
			return kindVM, vm
		}
		return kindOther, ""
	}
	if !strings.EqualFold(first[0].Type, ldapschema.AttrOU) || !strings.EqualFold(first[0].Value, "backup") {
		return kindOther, ""
	}
	parent := &ldap.DN{RDNs: parsed.RDNs[1:]}
	if vm, err := ldapschema.ParseVMDN(v.tree, parent.String()); err == nil {
		return kindVMConfig, vm
	}
	if pools, err := ldap.ParseDN(v.tree.Pools()); err == nil && len(parsed.RDNs) == len(pools.RDNs)+2 &&
		(&ldap.DN{RDNs: parsed.RDNs[2:]}).EqualFold(pools) {
		if a := parsed.RDNs[1].Attributes; len(a) == 1 && strings.EqualFold(a[0].Type, ldapschema.AttrVirtualMachinePool) {
			return kindPoolConfig, a[0].Value
		}
	}
	if ldapschema.NormalizeDN(dn) == ldapschema.NormalizeDN(v.tree.GlobalBackup()) {
		return kindGlobalConfig, ""
	}
	return kindOther, ""
}

// put records an entry; it returns the VMs whose plan may have changed, or
// all=true when every VM's may have.
func (v *view) put(e *ldap.Entry) (vms []string, all bool) {
	kind, name := v.classify(e.DN)
	switch kind {
	case kindVM:
		info := vmInfo{host: e.GetAttributeValue(ldapschema.AttrNode), pool: e.GetAttributeValue(ldapschema.AttrVirtualMachinePool)}
		if old, ok := v.vms[name]; ok && old.pool != info.pool {
			v.unlinkPool(name, old.pool)
		}
		v.vms[name] = info
		if v.poolVMs[info.pool] == nil {
			v.poolVMs[info.pool] = map[string]bool{}
		}
		v.poolVMs[info.pool][name] = true
		return []string{name}, false
	case kindVMConfig, kindPoolConfig, kindGlobalConfig:
		if !ldapschema.HasBackupClass(e) {
			return v.remove(e.DN)
		}
		ci := newCfgInfo(e, v.loc)
		switch kind {
		case kindVMConfig:
			v.vmCfg[name] = ci
			return []string{name}, false
		case kindPoolConfig:
			v.poolCfg[name] = ci
			return v.poolMembers(name), false
		default:
			v.global = ci
			return nil, true
		}
	}
	return nil, false
}

// remove forgets the entry at dn; results as for put.
func (v *view) remove(dn string) (vms []string, all bool) {
	kind, name := v.classify(dn)
	switch kind {
	case kindVM:
		if old, ok := v.vms[name]; ok {
			v.unlinkPool(name, old.pool)
			delete(v.vms, name)
			return []string{name}, false
		}
	case kindVMConfig:
		if _, ok := v.vmCfg[name]; ok {
			delete(v.vmCfg, name)
			return []string{name}, false
		}
	case kindPoolConfig:
		if _, ok := v.poolCfg[name]; ok {
			delete(v.poolCfg, name)
			return v.poolMembers(name), false
		}
	case kindGlobalConfig:
		if v.global != nil {
			v.global = nil
			return nil, true
		}
	}
	return nil, false
}

func (v *view) unlinkPool(vm, pool string) {
	if m := v.poolVMs[pool]; m != nil {
		delete(m, vm)
		if len(m) == 0 {
			delete(v.poolVMs, pool)
		}
	}
}

func (v *view) poolMembers(pool string) []string {
	out := make([]string, 0, len(v.poolVMs[pool]))
	for vm := range v.poolVMs[pool] {
		out = append(out, vm)
	}
	return out
}

// names lists every VM, sorted.
func (v *view) names() []string {
	out := make([]string, 0, len(v.vms))
	for vm := range v.vms {
		out = append(out, vm)
	}
	sort.Strings(out)
	return out
}

// plan computes a VM's plan, Next left zero; ok is false for an unknown VM.
func (v *view) plan(vm string) (Plan, bool) {
	info, ok := v.vms[vm]
	if !ok {
		return Plan{}, false
	}
	p := Plan{VM: vm, Host: info.host, Pool: info.pool}
	levels := []*cfgInfo{v.vmCfg[vm], v.poolCfg[info.pool], v.global}
	levelNames := []string{"vm", "pool", "global"}
	at := -1
	for i, l := range levels {
		if l != nil {
			at = i
			break
		}
	}
	if at < 0 {
		p.Status = PlanNoConfig
		return p, true
	}
	eff := levels[at]
	p.Source, p.Level = eff.dn, levelNames[at]
	if eff.err != nil {
		p.Status, p.Err = PlanInvalid, fmt.Errorf("configuration %s: %w", eff.dn, eff.err)
		return p, true
	}
	p.Iterations = eff.cfg.Iterations
	if eff.cfg.Exclude {
		p.Status = PlanExcluded
		return p, true
	}
	var src *cfgInfo
	for i := at; i < len(levels) && src == nil; i++ {
		l := levels[i]
		if l == nil {
			continue
		}
		if l.err != nil {
			p.Status, p.Err = PlanInvalid, fmt.Errorf("configuration %s: %w", l.dn, l.err)
			return p, true
		}
		if l.cfg.HasCron() {
			src = l
			p.ScheduleSource, p.ScheduleLevel = l.dn, levelNames[i]
		}
	}
	if src == nil {
		p.Status = PlanUnscheduled
		return p, true
	}
	switch {
	case !src.cfg.CronActive:
		p.Status = PlanInactive
	case src.schedErr != nil:
		p.Status, p.Err = PlanInvalid, fmt.Errorf("schedule of %s: %w", src.dn, src.schedErr)
	default:
		p.Status, p.Schedule = PlanScheduled, src.sched
	}
	return p, true
}
