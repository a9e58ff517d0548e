package crashtest

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// family is a VM reused from point to point while it stays healthy; a point
// that fails leaves it in doubt, and the next point starts on a fresh one.
type family struct {
	prefix      string
	patterns    []byte
	nextPattern byte

	vm       *testVM
	good     string          // a finished, successful backup of vm
	backedUp map[string]byte // what the guest read when good was taken
	broken   bool
}

func (f *family) ready(w *world, needGood bool) error {
	if f.broken || f.vm == nil {
		w.abandon(f.vm)
		f.vm, f.good, f.broken = nil, "", false
		v, err := w.newVM(f.prefix, f.patterns...)
		if err != nil {
			f.broken = true
			return fmt.Errorf("new VM: %w", err)
		}
		f.vm = v
	}
	if needGood && f.good == "" {
		name, err := w.cleanBackup(f.vm)
		if err != nil {
			f.broken = true
			return fmt.Errorf("backup without a crash: %w", err)
		}
		f.good, f.backedUp = name, maps.Clone(f.vm.reads)
	}
	return nil
}

// crash kills and restarts one victim at one moment of a leaf's life.
type crash struct {
	w   *world
	p   point
	mon *monitor

	once  sync.Once
	fired chan struct{} // the signal was sent
	dead  chan struct{} // the victim is dead
	done  chan struct{} // the victim runs again

	// Written before done is closed.
	killAt, restartAt       time.Time
	modeAtKill, modeAtDeath string
	modeAtRestart           string
	vanishFailedAfter       time.Duration
	vanishFailed            bool
	errs                    []string
	vanishLimitIs           string
}

func newCrash(w *world, p point, mon *monitor) *crash {
	return &crash{w: w, p: p, mon: mon, fired: make(chan struct{}), dead: make(chan struct{}), done: make(chan struct{})}
}

// arm sets the trigger on the leaf's mode.
func (c *crash) arm() {
	switch c.p.style {
	case killAt, vanish:
		c.mon.onMode(c.p.at, func(ldapschema.Leaf) {
			if c.p.delay > 0 {
				time.AfterFunc(c.p.delay, c.fire)
			} else {
				c.fire()
			}
		})
	case downAcross:
		c.mon.onMode(string(fsm.Mode(c.p.at).Running()), func(ldapschema.Leaf) { c.fire() })
	}
}

// fire sends SIGKILL at once (from the watch goroutine) and leaves waiting
// for the death and the restart to a goroutine of its own.
func (c *crash) fire() {
	c.once.Do(func() {
		c.killAt = time.Now()
		c.modeAtKill = c.mon.state().mode()
		dead := c.w.process(c.p.victim).kill()
		close(c.fired)
		go c.after(dead)
	})
}

// process is how a victim is killed (the channel closes once it is dead)
// and started again.
type process struct {
	kill    func() <-chan struct{}
	restart func() error
}

func (w *world) process(v victim) process {
	switch v {
	case vNode:
		return process{w.node.kill, w.node.start}
	case vCtl:
		return process{w.ctl.kill, w.ctl.start}
	case vSlapd:
		return process{func() <-chan struct{} { return background(func() { _ = w.slapd.Kill() }) }, w.slapd.Restart}
	case vLibvirtd:
		return process{
			func() <-chan struct{} {
				w.lvUp = false
				return background(w.lv.Kill)
			},
			w.restartLibvirtd,
		}
	}
	panic("crashtest: unknown victim " + string(v))
}

func background(f func()) <-chan struct{} {
	ch := make(chan struct{})
	go func() { f(); close(ch) }()
	return ch
}

func (c *crash) errorf(format string, a ...any) { c.errs = append(c.errs, fmt.Sprintf(format, a...)) }

func (c *crash) after(dead <-chan struct{}) {
	defer close(c.done)
	select {
	case <-dead:
	case <-time.After(30 * time.Second):
		c.errorf("%s still alive 30s after SIGKILL", c.p.victim)
	}
	close(c.dead)
	c.modeAtDeath = c.modeNow()
	switch c.p.style {
	case killAt:
		time.Sleep(pause)
	case downAcross, killBeforeLeaf:
		target := c.p.at
		if c.p.style == killBeforeLeaf {
			target = "initialize"
		}
		c.mon.waitFor(hangGuard, func(s state) bool { return finishedOrGone(s) || (s.exists && s.leaf.Mode == target) })
		time.Sleep(pause)
	case vanish:
		st, ok := c.mon.waitFor(c.vanishWait(), finishedOrGone)
		c.vanishFailedAfter = time.Since(c.killAt)
		c.vanishFailed = ok && st.exists && leafFailed(st.leaf)
	}
	c.modeAtRestart = c.mon.state().mode()
	if err := c.w.process(c.p.victim).restart(); err != nil {
		c.errorf("restart of %s: %v", c.p.victim, err)
	}
	c.restartAt = time.Now()
}

// vanishWait is how long controld may take to fail the leaves of a node
// that went away, by the keys this controld accepted.
func (c *crash) vanishWait() time.Duration {
	t := c.w.tune
	switch {
	case t.has(t.ctl, "nodeTimeout"):
		c.vanishLimitIs = fmt.Sprintf("nodeTimeout %s + lease %s + 10s", nodeTimeout, t.nodeTakeover())
		return nodeTimeout + t.nodeTakeover() + 10*time.Second
	case t.has(t.ctl, "deadlines"):
		c.vanishLimitIs = fmt.Sprintf("deadline %s + 10s", stepDeadline)
		return stepDeadline + 10*time.Second
	}
	c.vanishLimitIs = "hang guard: controld took neither nodeTimeout nor deadlines"
	return hangGuard
}

// modeNow reads the leaf's mode once the victim is dead: what it had
// written by then.
func (c *crash) modeNow() string {
	if c.p.victim == vSlapd {
		return c.modeAtKill
	}
	for i := 0; i < 20; i++ {
		e, err := c.w.store.Get(c.mon.dn, ldapschema.AttrMode)
		if errors.Is(err, ldapschema.ErrNotFound) {
			return "(removed)"
		}
		if err == nil {
			return e.GetAttributeValue(ldapschema.AttrMode)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return c.mon.state().mode()
}

// hitReport says whether the kill landed where the point aims.
func (c *crash) hitReport() (bool, string) {
	switch c.p.style {
	case downAcross, killBeforeLeaf:
		target := c.p.at
		if c.modeAtRestart == target {
			return true, fmt.Sprintf("controld down from %s until the leaf sat in %s", c.modeAtKill, target)
		}
		return false, fmt.Sprintf("controld killed in %s but the leaf was %s at its restart", c.modeAtKill, c.modeAtRestart)
	}
	mode := c.modeAtDeath
	if c.p.victim == vSlapd || c.p.victim == vLibvirtd {
		mode = c.modeAtKill
	}
	if mode == c.p.at {
		return true, "killed in " + c.p.at
	}
	return false, fmt.Sprintf("killed after the step had finished (leaf already %s)", mode)
}

// runPoint runs one crash point from a healthy family to its checks.
func (w *world) runPoint(p point, fam *family) (r result) {
	r.name = p.name()
	defer func() {
		if err := w.ensureUp(); err != nil {
			r.problem("cannot bring everything back up: %v", err)
		}
		if len(r.problems) > 0 {
			fam.broken = true
		}
	}()
	if err := fam.ready(w, p.flow != flowBackup); err != nil {
		r.problem("setup: %v", err)
		return r
	}
	v := fam.vm
	var leafAt time.Time
	var dn string
	if p.flow == flowBackup {
		leafAt = w.leafName()
		dn = w.store.Tree.Leaf(v.name, fsm.FormatTime(leafAt))
	} else {
		dn = w.store.Tree.Leaf(v.name, fam.good)
	}
	backupDir := filepath.Join(w.backup, "vm-persistent", "pool-a", v.name, fsm.FormatTime(leafAt))
	if p.flow != flowBackup {
		backupDir = filepath.Join(w.backup, "vm-persistent", "pool-a", v.name, fam.good)
	}
	if p.flow == flowRestore {
		// New data, so that the restore must bring the backed-up data back.
		pat := fam.nextPattern
		fam.nextPattern++
		if err := testenv.WriteGuestPattern(w.lv.URI, w.lv.LogDir, v.name, "vda", pat, testenv.PatternOffset, testenv.PatternLength); err != nil {
			r.problem("setup: guest write: %v", err)
			return r
		}
		v.reads["vda"] = pat
		if found := w.guestProblems(v); len(found) > 0 {
			r.problem("setup: %s", strings.Join(found, "; "))
			return r
		}
	}
	backupBefore := listing(backupDir)
	boots := testenv.SerialBoots(v.spec)
	ctlLog, nodeLog := logSize(w.ctl.logPath), logSize(w.node.logPath)
	w.ctl.takeSelfExits()
	w.node.takeSelfExits()

	mon, err := watchLeaf(w.store, v.name, dn)
	if err != nil {
		r.problem("setup: %v", err)
		return r
	}
	defer mon.stop()
	c := newCrash(w, p, mon)
	c.arm()
	start := time.Now()

	// The workflow, as controld's CLI or the web UI drive it.
	var final state
	var ok bool
	switch p.flow {
	case flowBackup:
		final, ok = w.backupFlow(c, v, leafAt, &r)
	case flowRestore:
		final, ok = w.restoreFlow(c, v, fam.good, &r)
	case flowDelete:
		final, ok = w.deleteFlow(c, dn, &r)
	}
	select {
	case <-c.fired:
		// The crash goroutine has its own guards; this only bounds them.
		select {
		case <-c.done:
			r.hit, r.how = c.hitReport()
			r.problems = append(r.problems, c.errs...)
		case <-time.After(hangGuard + c.vanishWait() + 30*time.Second):
			r.problem("%s was not restarted", p.victim)
		}
	default:
		r.problem("the crash point was never reached: the leaf went %s", mon.history())
	}
	took := time.Since(start)

	// The leaf's end. A restore's own outcome is its record on the leaf; the
	// return value stays the backup's (docs/restore.md).
	rv := final.leaf.ReturnValue
	if p.flow == flowRestore {
		rv = -1 // no record: the restore never ended
		if r := final.leaf.LastRestore; r != nil {
			rv = r.Code
		}
	}
	code := fmt.Sprintf("rv=%d (%s)", rv, ldapschema.ReturnCode(rv))
	switch {
	case !ok:
		// reported by the flow
	case p.flow == flowDelete:
		if !final.gone {
			r.problem("leaf not removed: %s %s", final.mode(), code)
		} else {
			r.outcome = "leaf removed"
		}
	case !final.exists || final.leaf.Mode != "finished":
		r.problem("leaf ended %s", final.mode())
	case p.style == vanish && rv == 0:
		r.problem("finished rv=0, want %d: controld did not fail the leaf of the vanished node", control.TimeoutCode)
	case p.style == vanish && rv != int(control.TimeoutCode):
		r.problem("finished %s, want controld's timeout code %d", code, control.TimeoutCode)
	case p.style != vanish && rv != 0:
		r.problem("finished %s, want 0", code)
	case p.style == vanish:
		r.outcome = "finished " + code
	default:
		r.outcome = fmt.Sprintf("finished rv=0 after %.1fs", took.Seconds())
	}
	if p.style == vanish && c.vanishLimitIs != "" {
		switch {
		case c.vanishFailed && c.vanishFailedAfter <= c.vanishWait():
			r.outcome = fmt.Sprintf("failed rv=%d (%s) %.1fs after the kill, limit %s; node back",
				rv, ldapschema.ReturnCode(rv), c.vanishFailedAfter.Seconds(), c.vanishLimitIs)
		case final.exists && final.leaf.Mode == "finished" && leafFailed(final.leaf):
			at, _ := mon.firstAt("finished")
			r.problem("leaf failed only %.1fs after the kill, once the node was back, not within %s",
				at.Sub(c.killAt).Seconds(), c.vanishLimitIs)
		default:
			r.problem("controld had not failed the leaf %.1fs after its node vanished (%s); it was %s",
				c.vanishFailedAfter.Seconds(), c.vanishLimitIs, c.modeAtRestart)
		}
	}

	// The VM, its images and the configured directories.
	stuck := !ok
	limit := settle
	if p.style == vanish {
		limit += w.tune.nodeTakeover()
	}
	if stuck {
		limit = 0 // nothing will settle; show how things stand
	}
	found, waited := settled(limit, func() []string { return append(w.vmProblems(v), w.leftovers(v)...) })
	r.problems = append(r.problems, found...)
	if len(found) == 0 {
		what := "VM runs on its own images, no backing file"
		if waited > time.Second {
			what += fmt.Sprintf(" (after %.1fs)", waited.Seconds())
		}
		r.checked = append(r.checked, what)
		if p.flow == flowRestore && ok && final.exists && rv == 0 {
			maps.Copy(v.reads, fam.backedUp)
		}
		if g := w.guestProblems(v); len(g) > 0 {
			r.problems = append(r.problems, g...)
		} else {
			r.checked = append(r.checked, "guest reads "+readsString(v))
		}
		r.checked = append(r.checked, "no leftovers")
	}
	if n := testenv.SerialBoots(v.spec); n != boots {
		r.problem("the guest booted again (%d boots, was %d): its RAM state was lost", n, boots)
	}
	switch {
	case p.flow == flowBackup && ok && final.exists && final.leaf.ReturnValue == 0:
		if found := w.backupProblems(v, final.leaf.Name); len(found) > 0 {
			r.problems = append(r.problems, found...)
		} else {
			r.checked = append(r.checked, "backup complete and equal to the disks")
			fam.good, fam.backedUp = final.leaf.Name, maps.Clone(v.reads)
		}
	case p.flow == flowRestore:
		if after := listing(backupDir); after != backupBefore {
			r.problem("the restore changed the backup it read:\nbefore:\n%safter:\n%s", backupBefore, after)
		}
	case p.flow == flowDelete && final.gone:
		if _, err := os.Stat(backupDir); !os.IsNotExist(err) {
			r.problem("backup directory %s still there after the delete (%v)", backupDir, err)
		}
		fam.good = ""
	}
	// Nobody may write a finished leaf again (a late node answer, say).
	if ok && final.exists && final.leaf.Mode == "finished" {
		mon.poll()
		if now := mon.state(); now.leaf.Mode != "finished" || now.leaf.ReturnValue != final.leaf.ReturnValue {
			r.problem("the finished leaf was rewritten to %s rv=%d", now.mode(), now.leaf.ReturnValue)
		}
	}

	for _, e := range append(w.ctl.takeSelfExits(), w.node.takeSelfExits()...) {
		r.problem("%s", e)
	}
	for _, d := range []*daemon{w.ctl, w.node} {
		off := ctlLog
		if d == w.node {
			off = nodeLog
		}
		if pan := logLines(d.logPath, off, 5, "panic:", "fatal error:"); len(pan) > 0 {
			r.problem("%s panicked: %s", d.name, strings.Join(pan, " | "))
		}
		if len(r.problems) > 0 {
			lines := logLines(d.logPath, off, 15, "level=error", "level=warn", "==== crashtest")
			lines = slices.DeleteFunc(lines, func(l string) bool { return strings.Contains(l, "directory watch broken") })
			r.details = append(r.details, fmt.Sprintf("%s log (%s), errors and warnings of this point:\n    %s",
				d.name, d.logPath, strings.Join(lines, "\n    ")))
		}
	}
	if len(r.problems) > 0 {
		r.details = append([]string{"leaf " + dn + ": " + mon.history()}, r.details...)
	}
	return r
}

func readsString(v *testVM) string {
	var parts []string
	for _, d := range v.disks {
		parts = append(parts, fmt.Sprintf("%s 0x%02x", d.Target, v.reads[d.Target]))
	}
	return strings.Join(parts, ", ")
}

// backupFlow starts the backup as `controld backup` does and waits for the
// leaf to finish.
func (w *world) backupFlow(c *crash, v *testVM, at time.Time, r *result) (state, bool) {
	if c.p.style == killBeforeLeaf {
		c.fire()
		select {
		case <-c.dead:
		case <-time.After(30 * time.Second):
		}
	}
	_, started := control.StartBackups(w.store, []string{v.name}, at)
	if err := started[0].Err; err != nil {
		r.problem("starting the backup: %v", err)
		return state{}, false
	}
	limit := hangGuard
	if c.p.style == vanish {
		limit += c.vanishWait()
	}
	st, ok := c.mon.waitFor(limit, finishedOrGone)
	if !ok {
		r.problem("leaf stuck in %s %s after the backup started", st.mode(), limit)
	}
	return st, ok
}

// restoreFlow replays the web UI: unretainSmallFiles, the LDIF copied to
// <vm>.ldif, unretainLargeFiles; controld writes restore and finished.
func (w *world) restoreFlow(c *crash, v *testVM, leaf string, r *result) (state, bool) {
	dn := c.mon.dn
	if err := w.operatorWrite(dn, "unretainSmallFiles", "0"); err != nil {
		r.problem("operator write: %v", err)
		return state{}, false
	}
	c.mon.poll() // the watch may not have shown the write yet: never judge by the leaf before it
	st, ok := c.mon.waitFor(hangGuard, func(s state) bool {
		return s.exists && (s.leaf.Mode == "unretainedSmallFiles" || s.leaf.Mode == "finished")
	})
	if !ok {
		r.problem("leaf stuck in %s %s after unretainSmallFiles", st.mode(), hangGuard)
		return st, false
	}
	if st.leaf.Mode == "finished" {
		return st, true
	}
	cancel := func(why string) (state, bool) {
		r.problem("%s", why)
		_ = w.operatorWrite(dn, "finished", fsm.FormatTime(time.Now()))
		st, ok := c.mon.waitFor(hangGuard, finishedOrGone)
		return st, ok
	}
	if st.leaf.ReturnValue != 0 {
		return cancel(fmt.Sprintf("unretainSmallFiles answered rv=%d (%s); restore cancelled",
			st.leaf.ReturnValue, ldapschema.ReturnCode(st.leaf.ReturnValue)))
	}
	dir := filepath.Join(w.retain, "vm-persistent", "pool-a", v.name, leaf)
	b, err := os.ReadFile(filepath.Join(dir, v.name+".ldif."+leaf))
	if err != nil {
		return cancel(fmt.Sprintf("the web UI would not find the unretained LDIF: %v", err))
	}
	if err := os.WriteFile(filepath.Join(dir, v.name+".ldif"), b, 0o640); err != nil {
		return cancel(err.Error())
	}
	if err := w.operatorWrite(dn, "unretainLargeFiles", "0"); err != nil {
		r.problem("operator write: %v", err)
		return state{}, false
	}
	c.mon.poll() // the watch may not have shown the write yet: never judge by the leaf before it
	st, ok = c.mon.waitFor(hangGuard, finishedOrGone)
	if !ok {
		r.problem("leaf stuck in %s %s after unretainLargeFiles", st.mode(), hangGuard)
	}
	return st, ok
}

// deleteFlow asks for a delete as an operator does: the node removes the
// files, controld the leaf.
func (w *world) deleteFlow(c *crash, dn string, r *result) (state, bool) {
	if err := w.operatorWrite(dn, "delete", "0"); err != nil {
		r.problem("operator write: %v", err)
		return state{}, false
	}
	c.mon.poll() // the watch may not have shown the write yet: never judge by the leaf before it
	st, ok := c.mon.waitFor(hangGuard, func(s state) bool {
		return s.gone || (s.exists && s.leaf.Mode == "finished")
	})
	if !ok {
		r.problem("leaf stuck in %s %s after delete", st.mode(), hangGuard)
	}
	return st, ok
}

// leafFailed: the leaf's last step failed: a backup's return value, or the
// record of a restore (which leaves the backup's return value in place).
func leafFailed(l ldapschema.Leaf) bool {
	if r := l.LastRestore; r != nil {
		return r.Code != 0
	}
	return l.ReturnValue != 0
}
