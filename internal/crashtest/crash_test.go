package crashtest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// hangGuard is how long a leaf may take to finish before it counts as stuck;
// it guards against a hang and is no speed assertion. It covers a node
// restart waiting out its predecessor's 30 s default lease, a step and the
// 60 s deadlines given to controld.
const hangGuard = 100 * time.Second

// pause is how long a killed process stays down before its restart.
const pause = 500 * time.Millisecond

type victim string

const (
	vNode     victim = "node"
	vCtl      victim = "controld"
	vSlapd    victim = "slapd"
	vLibvirtd victim = "libvirtd"
)

// style is when the victim dies and when it comes back.
type style int

const (
	// killAt: SIGKILL the moment the leaf enters the mode (plus delay),
	// restart after pause.
	killAt style = iota
	// downAcross: controld only acts between steps, within a millisecond,
	// so a kill on entering its mode mostly lands after it acted. It is
	// killed when the leaf enters the step before instead, and restarted
	// once the leaf sits in the mode: it must pick it up from there.
	downAcross
	// killBeforeLeaf: controld is down when the leaf is created.
	killBeforeLeaf
	// vanish: the node dies and stays away until controld has failed the
	// leaf, then comes back.
	vanish
)

type flow int

const (
	flowBackup flow = iota
	flowRestore
	flowDelete
)

type point struct {
	victim victim
	at     string // the leaf's mode
	delay  time.Duration
	style  style
	flow   flow
	racy   bool   // the step may finish before the kill lands: try again
	why    string // what happens at that moment
	// A leaf ends finished with return value 0, except that a vanished
	// node's leaves get controld's timeout code.
}

func (p point) name() string {
	at := p.at
	if p.delay > 0 {
		at += "+" + p.delay.String()
	}
	if p.style == vanish {
		return "node disappears at " + at
	}
	s := string(p.victim) + " at " + at
	if p.why != "" {
		s += " (" + p.why + ")"
	}
	return s
}

// The backup family's VM has two disks, the restore family's one.
var points = []point{
	{victim: vNode, at: "snapshotting"},
	{victim: vNode, at: "snapshotting", delay: time.Second, why: "VM saving"},
	{victim: vNode, at: "merging"},
	{victim: vNode, at: "retaining"},
	{victim: vNode, at: "deleting", flow: flowDelete, racy: true},
	{victim: vCtl, at: "initialize", style: killBeforeLeaf},
	{victim: vCtl, at: "initialized", racy: true},
	{victim: vCtl, at: "snapshotted", style: downAcross},
	{victim: vCtl, at: "merged", style: downAcross},
	{victim: vCtl, at: "retained", style: downAcross},
	{victim: vSlapd, at: "snapshotting", delay: time.Second, why: "VM saving"},
	{victim: vSlapd, at: "merging"},
	{victim: vLibvirtd, at: "merging"},
	{victim: vNode, at: "snapshotting", delay: time.Second, style: vanish},

	{victim: vNode, at: "unretainingSmallFiles", flow: flowRestore},
	{victim: vNode, at: "unretainingLargeFiles", flow: flowRestore},
	{victim: vNode, at: "restoring", flow: flowRestore},
	{victim: vNode, at: "restoring", delay: time.Second, flow: flowRestore, why: "VM stopping"},
	{victim: vCtl, at: "unretainedLargeFiles", style: downAcross, flow: flowRestore},
	{victim: vCtl, at: "restored", style: downAcross, flow: flowRestore},
}

// TestCrashPoints is `make crashtest`: one line per crash point on stdout,
// the details of each failure in the test log.
func TestCrashPoints(t *testing.T) {
	runStart := time.Now()
	w, teardown := setup(t)
	defer teardown()
	for _, h := range w.header {
		fmt.Println("crashtest: " + h)
	}
	backup := &family{prefix: "b", patterns: []byte{0xb1, 0xb2}}
	restore := &family{prefix: "r", patterns: []byte{0xab}, nextPattern: 0x11}
	var ok, notHit, failed int
	for _, p := range points {
		fam := backup
		if p.flow == flowRestore {
			fam = restore
		}
		t.Run(strings.NewReplacer(" ", "_", "(", "", ")", "").Replace(p.name()), func(t *testing.T) {
			r := w.runPointTries(p, fam)
			fmt.Println(r.line())
			switch {
			case len(r.problems) > 0:
				failed++
				t.Errorf("%s\n  %s", r.line(), strings.Join(append(r.problems, r.details...), "\n  "))
			case !r.hit:
				notHit++
			default:
				ok++
			}
		})
	}
	// A family left in doubt was reported by its point; leave it out.
	for _, f := range []*family{backup, restore} {
		if f.broken {
			w.abandon(f.vm)
		}
	}
	found, _ := settled(settle, func() []string { return w.leftovers(nil) })
	if len(found) > 0 {
		fmt.Println("crashtest: final scan of the retain, RAM disk, image and backup directories: FAIL (" + strings.Join(found, "; ") + ")")
		t.Errorf("left behind after the run: %s", strings.Join(found, "; "))
	} else {
		fmt.Println("crashtest: final scan of the retain, RAM disk, image and backup directories: ok (nothing left behind)")
	}
	fmt.Printf("crashtest: %d crash points: %d ok, %d ok but not hit, %d FAIL; total %s\n",
		len(points), ok, notHit, failed, time.Since(runStart).Round(100*time.Millisecond))
}

// result is one crash point's outcome.
type result struct {
	name     string
	hit      bool
	how      string // where the kill landed
	outcome  string // how the leaf ended
	checked  []string
	problems []string
	details  []string
	tries    int
	took     time.Duration
}

func (r *result) problem(format string, a ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, a...))
}

func (r result) line() string {
	status := "ok"
	if len(r.problems) > 0 {
		status = "FAIL"
	} else if !r.hit {
		status = "ok, NOT HIT"
	}
	var parts []string
	if r.how != "" {
		parts = append(parts, r.how)
	}
	if r.outcome != "" {
		parts = append(parts, r.outcome)
	}
	if len(r.problems) > 0 {
		parts = append(parts, r.problems...)
	} else {
		parts = append(parts, r.checked...)
	}
	if r.tries > 1 {
		parts = append(parts, fmt.Sprintf("%d tries", r.tries))
	}
	parts = append(parts, fmt.Sprintf("%.1fs", r.took.Seconds()))
	return fmt.Sprintf("crash %s: %s (%s)", r.name, status, strings.Join(parts, "; "))
}

// runPointTries runs a point, again (up to three times) while the kill keeps
// landing after the step it aimed at.
func (w *world) runPointTries(p point, fam *family) result {
	start := time.Now()
	var r result
	for try := 1; try <= 3; try++ {
		r = w.runPoint(p, fam)
		r.tries = try
		if r.hit || !p.racy || len(r.problems) > 0 {
			break
		}
	}
	r.took = time.Since(start)
	return r
}
