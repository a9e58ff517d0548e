package fsm

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The transcripts in testdata/ are read like the seed's LDIF steps: one
// command per paragraph, "----", then what it printed. A tiny runner in the
// spirit of etcd raft's datadriven tests; `go test ./fsm -rewrite` regenerates
// the outputs, to be reviewed as a diff.
var rewrite = flag.Bool("rewrite", false, "rewrite the expected outputs of testdata/*.txt")

const defaultName = "20121002T010000Z"

type block struct {
	pre      string // comments and blank lines before the command, kept on rewrite
	line     int
	cmd      string
	expected string
}

func parseTranscript(t *testing.T, path string) (blocks []block, tail string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var pre strings.Builder
	for i := 0; i < len(lines); i++ {
		ln := lines[i]
		if strings.TrimSpace(ln) == "" || strings.HasPrefix(ln, "#") {
			pre.WriteString(ln + "\n")
			continue
		}
		b := block{pre: pre.String(), line: i + 1, cmd: ln}
		pre.Reset()
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s:%d: command without a ---- line", path, i+1)
		}
		i += 2
		var out []string
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			out = append(out, lines[i])
		}
		i-- // the blank line, if any, belongs to the next block's preamble
		b.expected = strings.Join(out, "\n")
		blocks = append(blocks, b)
	}
	return blocks, pre.String()
}

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			blocks, tail := parseTranscript(t, path)
			s := &sim{t: t, leaves: map[string]*Leaf{}}
			var out strings.Builder
			for _, b := range blocks {
				s.pos = fmt.Sprintf("%s:%d", path, b.line)
				got := s.run(b.cmd)
				if *rewrite {
					fmt.Fprintf(&out, "%s%s\n----\n%s\n", b.pre, b.cmd, got)
				} else if got != b.expected {
					t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", s.pos, b.cmd, got, b.expected)
				}
			}
			if *rewrite {
				if err := os.WriteFile(path, []byte(out.String()+tail), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// sim is a directory of leaves that applies writes as compare-and-swaps.
type sim struct {
	t      *testing.T
	pos    string
	leaves map[string]*Leaf
	last   []Write   // the writes of the last dry reconcile, for `apply`
	now    time.Time // the last stamp= seen: when applied writes change a mode
}

type args map[string]string

func (s *sim) fatalf(format string, a ...any) {
	s.t.Helper()
	s.t.Fatalf("%s: "+format, append([]any{s.pos}, a...)...)
}

func (a args) need(s *sim, k string) string {
	v, ok := a[k]
	if !ok {
		s.fatalf("missing %s=", k)
	}
	return v
}

func (a args) or(k, def string) string {
	if v, ok := a[k]; ok {
		return v
	}
	return def
}

func (s *sim) mode(v string) Mode {
	if v == "-" {
		return Absent
	}
	m, err := ParseMode(v)
	if err != nil {
		s.fatalf("%v", err)
	}
	return m
}

func (s *sim) num(v string) int {
	n, err := strconv.Atoi(v)
	if err != nil {
		s.fatalf("%v", err)
	}
	return n
}

func (s *sim) when(v string) time.Time {
	tm, err := ParseTime(v)
	if err != nil {
		s.fatalf("%v", err)
	}
	return tm
}

// limits reads mode:duration,... ("" is none).
func (s *sim) limits(v string) Limits {
	if v == "" {
		return nil
	}
	limits := Limits{}
	for _, kv := range strings.Split(v, ",") {
		m, d, _ := strings.Cut(kv, ":")
		dur, err := time.ParseDuration(d)
		if err != nil {
			s.fatalf("%v", err)
		}
		limits[s.mode(m)] = dur
	}
	return limits
}

// holding counts host's leaves that hold one of its slots, as controld
// counts them for Facts.Slots.
func (s *sim) holding(host string) int {
	n := 0
	for _, l := range s.leaves {
		if l.Host == host && HoldsSlot(l.Mode) {
			n++
		}
	}
	return n
}

// ofVM is vm's leaves, in sorted order.
func (s *sim) ofVM(vm string) []Leaf {
	var out []Leaf
	for _, l := range s.sorted() {
		if l.VM == vm {
			out = append(out, l)
		}
	}
	return out
}

func key(vm, name string) string { return vm + "/" + name }

// leaf finds the leaf of vm (of name=, if the VM has several), or returns a
// template for a leaf not yet created.
func (s *sim) leaf(a args, vm string) Leaf {
	if name, ok := a["name"]; ok {
		if l := s.leaves[key(vm, name)]; l != nil {
			return *l
		}
		return Leaf{Key: key(vm, name), VM: vm, Name: name, Host: a.or("host", "h1")}
	}
	var found []*Leaf
	for _, l := range s.leaves {
		if l.VM == vm {
			found = append(found, l)
		}
	}
	switch len(found) {
	case 0:
		return Leaf{Key: key(vm, defaultName), VM: vm, Name: defaultName, Host: a.or("host", "h1")}
	case 1:
		return *found[0]
	}
	s.fatalf("vm %s has %d leaves: say name=", vm, len(found))
	return Leaf{}
}

func (s *sim) sorted() []Leaf {
	var ls []Leaf
	for _, l := range s.leaves {
		ls = append(ls, *l)
	}
	sort.Slice(ls, func(i, j int) bool {
		a, b := ls[i], ls[j]
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.VM < b.VM
	})
	return ls
}

// apply swaps w in if the leaf's mode is still w.From; tmpl is the leaf to
// create when w.From is Absent.
func (s *sim) apply(w Write, tmpl Leaf) string {
	cur := Absent
	if l := s.leaves[w.Key]; l != nil {
		cur = l.Mode
	}
	if cur != w.From {
		return fmt.Sprintf("conflict: %s is %s, not %s", w.Key, cur, w.From)
	}
	if l := s.leaves[w.Key]; w.IfState != "" && l != nil && l.State != w.IfState {
		return fmt.Sprintf("conflict: %s has state %s, not %s", w.Key, l.State, w.IfState)
	}
	if w.Remove {
		delete(s.leaves, w.Key)
		return ""
	}
	l := s.leaves[w.Key]
	if l == nil {
		l = &tmpl
		s.leaves[w.Key] = l
	}
	if l.Mode != w.To {
		l.Since = s.now
	}
	l.Mode = w.To
	if w.State != "" {
		l.State = w.State
	}
	if w.ReturnValue != nil {
		l.ReturnValue, l.ReturnMissing = *w.ReturnValue, false
	}
	if w.Backup != nil {
		b := *w.Backup
		l.Backup = &b
	}
	if w.LastRestore != nil {
		o := *w.LastRestore
		l.LastRestore = &o
	}
	return ""
}

// emit prints w and, unless dry, applies it.
func (s *sim) emit(out *[]string, w Write, tmpl Leaf, dry bool) {
	*out = append(*out, w.String())
	if !dry {
		if c := s.apply(w, tmpl); c != "" {
			*out = append(*out, "  "+c)
		}
	}
}

// emitOrError prints err if there is one, else emits w.
func (s *sim) emitOrError(out *[]string, w Write, err error, tmpl Leaf, dry bool) {
	if err != nil {
		*out = append(*out, "error: "+err.Error())
		return
	}
	s.emit(out, w, tmpl, dry)
}

func (s *sim) run(cmd string) string {
	fields := strings.Fields(cmd)
	a := args{}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		a[k] = v
	}
	_, dry := a["dry"]
	if st, ok := a["stamp"]; ok {
		s.now = s.when(st)
	}
	var out []string
	switch fields[0] {
	case "leaf":
		vm := a.need(s, "vm")
		name := a.or("name", defaultName)
		m := s.mode(a.need(s, "mode"))
		l := Leaf{Key: key(vm, name), VM: vm, Name: name, Host: a.or("host", "h1"), Mode: m}
		l.State = name
		if m.IsRequest() {
			l.State = Pending
		}
		l.State = a.or("state", l.State)
		l.Since = s.when(a.or("since", name))
		if rv := a.or("rv", "0"); rv == "none" {
			l.ReturnMissing = true
		} else {
			l.ReturnValue = s.num(rv)
		}
		if b, ok := a["backup"]; ok {
			n := s.num(b)
			l.Backup = &n
		}
		if r, ok := a["restore"]; ok {
			// restore=<result>:<code>:<step>, as closeRestore records it
			parts := strings.Split(r, ":")
			if len(parts) != 3 {
				s.fatalf("restore=result:code:step")
			}
			l.LastRestore = &RestoreOutcome{Result: RestoreResult(parts[0]), Code: s.num(parts[1]), Step: s.mode(parts[2]), At: l.State}
		}
		s.leaves[l.Key] = &l
		out = append(out, l.String())

	case "show":
		for _, l := range s.sorted() {
			out = append(out, l.String())
		}
		if len(out) == 0 {
			out = append(out, "no leaves")
		}

	case "reconcile":
		// reconcile stamp=T [limits=mode:dur,...] [rc=N] [gone=host,...] [cap=N]
		stamp := a.need(s, "stamp")
		f := Facts{Now: s.when(stamp), Limits: s.limits(a.or("limits", "")),
			TimeoutCode: s.num(a.or("rc", "1")), Slots: NoCap}
		gone := map[string]bool{}
		for _, h := range strings.Split(a.or("gone", ""), ",") {
			gone[h] = h != ""
		}
		s.last = nil
		for _, batch := range Batches(s.sorted()) {
			f.HostGone = gone[batch[0].Host]
			if c, ok := a["cap"]; ok {
				f.Slots = s.num(c) - s.holding(batch[0].Host)
			}
			ws := Reconcile(batch, f)
			// Level-triggered: the same leaves in any order give the same writes.
			rev := append([]Leaf(nil), batch...)
			for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
				rev[i], rev[j] = rev[j], rev[i]
			}
			if again := Reconcile(rev, f); !reflect.DeepEqual(ws, again) {
				s.t.Errorf("%s: Reconcile is not deterministic:\n%v\n%v", s.pos, ws, again)
			}
			for _, w := range ws {
				if err := w.Check(Control); err != nil {
					s.t.Errorf("%s: Reconcile wrote an edge the table refuses: %v", s.pos, err)
				}
				s.last = append(s.last, w)
				s.emit(&out, w, Leaf{}, dry)
			}
			if at, ok := Wake(batch, f); ok && !dry {
				out = append(out, fmt.Sprintf("wake %s %s at %s", batch[0].Host, batch[0].Name, FormatTime(at)))
			}
		}
		if len(out) == 0 {
			out = append(out, "no writes")
		}

	case "retain":
		// retain vm=V n=N stamp=T: retention's writes for one VM, applied.
		vm := a.need(s, "vm")
		same := s.ofVM(vm)
		for _, w := range Expire(same, s.num(a.need(s, "n")), a.need(s, "stamp")) {
			if err := w.Check(Control); err != nil {
				s.t.Errorf("%s: Expire wrote an edge the table refuses: %v", s.pos, err)
			}
			s.emit(&out, w, Leaf{}, dry)
		}
		if len(out) == 0 {
			out = append(out, "nothing expired")
		}

	case "apply":
		// Applies the last dry reconcile's writes late, as a slow controld would.
		for _, w := range s.last {
			if c := s.apply(w, Leaf{}); c != "" {
				out = append(out, c)
			} else {
				out = append(out, "applied: "+w.String())
			}
		}

	case "node-claim", "node-complete", "node":
		for _, vm := range strings.Split(a.need(s, "vm"), ",") {
			l := s.leaf(a, vm)
			if fields[0] != "node-complete" {
				w, ok := Claim(l)
				if !ok {
					out = append(out, fmt.Sprintf("%s: nothing to claim in %s state=%s", l.Key, l.Mode, l.State))
					continue
				}
				if err := w.Check(Node); err != nil {
					s.t.Errorf("%s: Claim wrote an edge the table refuses: %v", s.pos, err)
				}
				s.emit(&out, w, l, false)
				l = *s.leaves[l.Key]
			}
			if fields[0] != "node-claim" {
				if as, ok := a["as"]; ok {
					l.Mode = s.mode(as) // a node acting on what it read earlier
				}
				w := Complete(l, s.num(a.need(s, "rc")), a.need(s, "stamp"))
				s.emitOrError(&out, w, w.Check(Node), l, false)
			}
		}

	case "operator", "control":
		side, _ := ParseSide(fields[0])
		l := s.leaf(a, a.need(s, "vm"))
		w, err := Transition(side, l, s.mode(a.need(s, "to")), a.need(s, "stamp"))
		s.emitOrError(&out, w, err, l, dry)

	case "start-restore":
		l := s.leaf(a, a.need(s, "vm"))
		same := s.ofVM(l.VM)
		w, err := StartRestore(l, same, a.need(s, "stamp"))
		s.emitOrError(&out, w, err, l, dry)

	case "cancel-restore", "continue-restore":
		l := s.leaf(a, a.need(s, "vm"))
		var w Write
		var err error
		if fields[0] == "cancel-restore" {
			w, err = CancelRestore(l, a.need(s, "stamp"))
		} else {
			w, err = ContinueRestore(l, s.sorted(), a.need(s, "stamp"))
		}
		if err == nil {
			err = w.Check(Operator)
		}
		s.emitOrError(&out, w, err, l, dry)

	case "may-restore":
		// The node's question before each restore step, and the CLI's list.
		l := s.leaf(a, a.need(s, "vm"))
		if err := RestoreMayStart(l, s.sorted()); err != nil {
			out = append(out, "no: "+err.Error())
		} else {
			out = append(out, "yes")
		}
		rc, known := l.BackupOutcome()
		out = append(out, fmt.Sprintf("restorable=%v backup=%d known=%v", Restorable(l), rc, known))

	case "may-backup":
		vm := a.need(s, "vm")
		same := s.ofVM(vm)
		if err := BackupMayStart(same); err != nil {
			out = append(out, "no: "+err.Error())
		} else {
			out = append(out, "yes")
		}

	case "check":
		side, err := ParseSide(a.need(s, "side"))
		if err != nil {
			s.fatalf("%v", err)
		}
		if err := Check(side, s.mode(a.need(s, "from")), s.mode(a.need(s, "to"))); err != nil {
			out = append(out, err.Error())
		} else {
			out = append(out, "ok")
		}

	case "overdue":
		l := s.leaf(a, a.need(s, "vm"))
		limits := s.limits(a.need(s, "limits"))
		since, now := s.when(a.need(s, "since")), s.when(a.need(s, "now"))
		if at, ok := Deadline(l, since, limits); ok {
			out = append(out, "deadline "+FormatTime(at))
		} else {
			out = append(out, "no deadline")
		}
		w, ok := Overdue(l, now, since, limits, s.num(a.need(s, "rc")))
		if !ok {
			out = append(out, "not overdue")
			break
		}
		if err := w.Check(Control); err != nil {
			s.t.Errorf("%s: Overdue wrote an edge the table refuses: %v", s.pos, err)
		}
		s.emit(&out, w, l, dry)

	default:
		s.fatalf("unknown command %q", fields[0])
	}
	if len(out) == 0 {
		// An empty output would read as the blank line that ends a block.
		return "ok"
	}
	return strings.Join(out, "\n")
}
