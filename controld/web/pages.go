package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// page is what the layout needs; Data is the page's own.
type page struct {
	Title  string
	Nav    string // the menu entry to mark current
	User   string // the DN logged in; "" on the login page
	CSRF   string
	Flash  []flash
	Stream string // the page's event stream, "" for none
	Data   any
}

var funcs = template.FuncMap{
	"percent": func(f float64) int { return int(f*100 + 0.5) },
	"vmURL":   func(vm string) string { return "/vm/" + url.PathEscape(vm) },
}

// parsePages parses each page with the layout and the live fragments.
func parsePages() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "overview", "vm", "schedule", "error"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/fragments.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// render writes a whole page; a template error is the server's bug.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, p page) {
	var b bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&b, "layout", p); err != nil {
		s.o.Log.WithError(err).Error("web: rendering " + name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// fragment renders one live part of a page, for the event stream.
func (s *Server) fragment(page, name string, data any) (string, error) {
	var b bytes.Buffer
	err := s.pages[page].ExecuteTemplate(&b, name, data)
	return b.String(), err
}

func (s *Server) pageFor(r *http.Request, sess *session, title, nav string, data any) page {
	return page{Title: title, Nav: nav, User: sess.dn, CSRF: sess.csrf, Flash: sess.takeFlash(), Data: data}
}

// failPage shows a read that failed: the directory's words, not ours.
func (s *Server) failPage(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	code := http.StatusBadGateway
	if errors.Is(err, control.ErrUnknownVM) || errors.Is(err, ldapschema.ErrUnsafeName) {
		code = http.StatusNotFound
	}
	s.render(w, r, code, "error", s.pageFor(r, sess, "Error", "", describe(err)))
}

// describe words an error for the page; a refusal of the directory's access
// rules says so.
func describe(err error) string {
	if ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) {
		return "The directory refused this for your account (insufficient access rights): " + err.Error()
	}
	if errors.Is(err, ldapschema.ErrUnavailable) {
		return "The directory cannot be reached: " + err.Error()
	}
	return err.Error()
}

// Times and sizes as a person reads them.

func (s *Server) when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.In(s.o.Location).Format("2006-01-02 15:04 MST")
}

func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh ago", int(d.Hours())/24, int(d.Hours())%24)
}

// result is a return value with its meaning from the troubleshooting
// table (ldapschema.ReturnCode, the one owner).
func result(rc int) string {
	return fmt.Sprintf("%d %s", rc, ldapschema.ReturnCode(rc))
}

type progressView struct {
	Text     string
	Fraction float64
	Known    bool // Fraction is meaningful
}

func progressOf(text string) *progressView {
	if text == "" {
		return nil
	}
	p, _ := control.LeafProgress([]string{"progress: " + text})
	return &progressView{Text: p.Text, Fraction: p.Fraction(), Known: p.TotalMiB > 0}
}

// The overview.

type overviewRow struct {
	VM, Host, Pool       string
	LastGood, LastGoodAt string // age, date; "" for none
	Overdue              bool
	Due                  string
	Result, ResultLeaf   string
	Failed               bool
	LastRestore          string
	Next, PlanStatus     string
	Running              []runningView
	sortKeys             map[string]string
}

type runningView struct {
	Leaf, Mode string
	Progress   *progressView
}

type overviewData struct {
	Q, Sort, Dir string
	Rows         []overviewRow
	Total        int
	Columns      []column
	Updated      string
}

type column struct {
	Key, Label, Href, AriaSort string
}

var sortKeys = []struct{ key, label string }{
	{"vm", "VM"}, {"host", "Host"}, {"pool", "Pool"}, {"good", "Last good backup"},
	{"result", "Last result"}, {"next", "Next run"}, {"now", "Running now"},
}

func (s *Server) overview(sess *session, q, sortBy, dir string) (overviewData, error) {
	now := s.o.Now()
	vms, err := control.Overview(sess.store, s.o.Location, now)
	if err != nil {
		return overviewData{}, err
	}
	d := overviewData{Q: q, Sort: sortBy, Dir: dir, Total: len(vms), Updated: now.In(s.o.Location).Format("15:04:05")}
	if d.Sort == "" {
		d.Sort = "vm"
	}
	if d.Dir != "desc" {
		d.Dir = "asc"
	}
	needle := strings.ToLower(strings.TrimSpace(q))
	for _, v := range vms {
		if needle != "" && !strings.Contains(strings.ToLower(v.VM+" "+v.Host+" "+v.Pool), needle) {
			continue
		}
		row := overviewRow{VM: v.VM, Host: v.Host, Pool: v.Pool, Overdue: v.Overdue, PlanStatus: string(v.Plan.Status)}
		if !v.LastGood.IsZero() {
			row.LastGood, row.LastGoodAt = age(now.Sub(v.LastGood)), s.when(v.LastGood)
		}
		if v.Overdue {
			row.Due = s.when(v.Due)
		}
		if l := v.Last; l != nil {
			row.Result, row.ResultLeaf, row.Failed, row.LastRestore = result(l.ReturnValue), l.Leaf, l.ReturnValue != 0, l.LastRestore
		}
		if !v.Plan.Next.IsZero() {
			row.Next = s.when(v.Plan.Next)
		}
		for _, r := range v.Running {
			row.Running = append(row.Running, runningView{Leaf: r.Leaf, Mode: r.Mode, Progress: progressOf(r.Progress)})
		}
		running := ""
		if len(v.Running) > 0 {
			running = v.Running[0].Mode
		}
		goodKey := ""
		if !v.LastGood.IsZero() {
			goodKey = v.LastGood.UTC().Format(time.RFC3339)
		}
		nextKey := "~" // unscheduled last
		if !v.Plan.Next.IsZero() {
			nextKey = v.Plan.Next.UTC().Format(time.RFC3339)
		}
		row.sortKeys = map[string]string{"vm": v.VM, "host": v.Host, "pool": v.Pool, "good": goodKey,
			"result": fmt.Sprintf("%t %s", !row.Failed, row.Result), "next": nextKey, "now": running}
		d.Rows = append(d.Rows, row)
	}
	sort.SliceStable(d.Rows, func(i, j int) bool {
		a, b := d.Rows[i].sortKeys[d.Sort], d.Rows[j].sortKeys[d.Sort]
		if d.Dir == "desc" {
			return a > b
		}
		return a < b
	})
	for _, c := range sortKeys {
		col := column{Key: c.key, Label: c.label}
		next := "asc"
		if c.key == d.Sort {
			col.AriaSort = map[string]string{"asc": "ascending", "desc": "descending"}[d.Dir]
			if d.Dir == "asc" {
				next = "desc"
			}
		}
		col.Href = "/?" + url.Values{"q": {q}, "sort": {c.key}, "dir": {next}}.Encode()
		d.Columns = append(d.Columns, col)
	}
	return d, nil
}

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	d, err := s.overview(sess, q.Get("q"), q.Get("sort"), q.Get("dir"))
	if err != nil {
		s.failPage(w, r, sess, err)
		return
	}
	p := s.pageFor(r, sess, "Backups", "overview", d)
	p.Stream = "/events?" + url.Values{"view": {"overview"}, "q": {d.Q}, "sort": {d.Sort}, "dir": {d.Dir}}.Encode()
	s.render(w, r, http.StatusOK, "overview", p)
}

// A VM's page.

type backupRow struct {
	Leaf, Date, Mode, Result string
	Failed, Running          bool
	Duration, Downtime, Size string
	LastRestore              string
	Progress                 *progressView
	Restorable               bool
	RestoreRefusal           string // why this backup may not be restored now
}

type waitingRestore struct {
	Leaf, Date string
	Count      string // "2 difference(s)"
	Diff       []string
	Failed     bool   // fetching the small files failed
	Result     string // its return value and meaning
}

type vmData struct {
	VM, Host, Pool string
	CSRF           string
	Backups        []backupRow // newest first
	Waiting        *waitingRestore
	BackupRefusal  string // why no backup may start now
	Updated        string
}

func (s *Server) vmView(sess *session, vm string) (vmData, error) {
	if err := ldapschema.SafeName(vm); err != nil {
		return vmData{}, fmt.Errorf("VM name %q: %w", vm, err)
	}
	st := sess.store
	backups, err := control.ListBackups(st, vm)
	if err != nil {
		return vmData{}, err
	}
	leaves, err := control.Leaves(st, vm)
	if err != nil {
		return vmData{}, err
	}
	d := vmData{VM: vm, CSRF: sess.csrf, Updated: s.o.Now().In(s.o.Location).Format("15:04:05")}
	if e, err := st.Get(st.Tree.VM(vm), "*"); err == nil {
		if v, err := ldapschema.ParseVM(st.Tree, e); err == nil {
			d.Host, d.Pool = v.Node, v.Pool
		}
	}
	byName := map[string]ldapschema.Leaf{}
	var all []fsm.Leaf
	for _, l := range leaves {
		byName[l.Name] = l
		all = append(all, l.FSM(""))
	}
	if err := fsm.BackupMayStart(all); err != nil {
		d.BackupRefusal = refusal(err)
	}
	for i := len(backups) - 1; i >= 0; i-- {
		b := backups[i]
		row := backupRow{Leaf: b.Leaf, Date: s.when(b.Planned), Mode: b.Mode, Result: result(b.ReturnValue),
			Failed: b.ReturnValue != 0, Running: b.Mode != string(fsm.Finished), LastRestore: b.LastRestore}
		if row.Date == "" {
			row.Date = b.Leaf
		}
		if b.Duration > 0 {
			row.Duration = b.Duration.Round(100 * time.Millisecond).String()
		}
		if b.Downtime > 0 {
			row.Downtime = b.Downtime.Round(10 * time.Millisecond).String()
		}
		if b.SizeBytes >= 0 {
			row.Size = control.HumanBytes(b.SizeBytes)
		}
		if l, ok := byName[b.Leaf]; ok {
			if p, ok := control.LeafProgress(l.ExecutionTime); ok && row.Running {
				row.Progress = &progressView{Text: p.Text, Fraction: p.Fraction(), Known: p.TotalMiB > 0}
			}
			if control.Restorable(l) {
				row.Restorable = true
				if err := fsm.RestoreMayStart(l.FSM(""), all); err != nil {
					row.RestoreRefusal = refusal(err)
				}
			}
			if l.Mode == string(fsm.UnretainedSmallFiles) {
				d.Waiting = s.waiting(st, l, row.Date)
			}
		}
		d.Backups = append(d.Backups, row)
	}
	return d, nil
}

// refusal words an fsm refusal for the page, without the package prefix.
func refusal(err error) string {
	msg := strings.TrimPrefix(err.Error(), "fsm: ")
	if errors.Is(err, fsm.ErrVMBusy) {
		return "Not now: " + msg + "."
	}
	return msg
}

// waiting is a restore that waits for the operator's decision, with the
// differences the node published.
func (s *Server) waiting(st *ldapschema.Store, l ldapschema.Leaf, date string) *waitingRestore {
	w := &waitingRestore{Leaf: l.Name, Date: date, Result: result(l.ReturnValue), Failed: l.ReturnValue != 0}
	e, err := st.Get(l.DN, ldapschema.AttrDescription)
	if err != nil {
		w.Diff = []string{"(the differences cannot be read: " + describe(err) + ")"}
		return w
	}
	// The count comes first (ldapschema.FormatRestoreDiff), then one value a difference.
	if diff := ldapschema.ParseRestoreDiff(e.GetAttributeValues(ldapschema.AttrDescription)); len(diff) > 0 {
		w.Count, w.Diff = diff[0], diff[1:]
	}
	return w
}

func (s *Server) vmPage(w http.ResponseWriter, r *http.Request, sess *session) {
	vm := r.PathValue("vm")
	d, err := s.vmView(sess, vm)
	if err != nil {
		s.failPage(w, r, sess, err)
		return
	}
	p := s.pageFor(r, sess, vm, "", d)
	p.Stream = "/events?" + url.Values{"view": {"vm"}, "vm": {vm}}.Encode()
	s.render(w, r, http.StatusOK, "vm", p)
}

// The schedule.

type scheduleRow struct {
	VM, Host, Pool, Next, Leaf, Schedule, From, Status string
	Problem                                            bool
}

func (s *Server) schedulePage(w http.ResponseWriter, r *http.Request, sess *session) {
	plans, err := control.ListSchedule(sess.store, s.o.Location, s.o.Now())
	if err != nil {
		s.failPage(w, r, sess, err)
		return
	}
	var rows []scheduleRow
	for _, p := range plans {
		row := scheduleRow{VM: p.VM, Host: p.Host, Pool: p.Pool, From: p.Level, Status: string(p.Status),
			Problem: p.Status == control.PlanInvalid}
		if !p.Next.IsZero() {
			row.Next, row.Leaf = s.when(p.Next), control.LeafName(p.Next)
		}
		if p.Schedule != nil {
			row.Schedule = p.Schedule.Expr()
		}
		if p.ScheduleLevel != "" && p.ScheduleLevel != p.Level {
			row.From += ", schedule " + p.ScheduleLevel
		}
		if p.Err != nil {
			row.Status += ": " + p.Err.Error()
		}
		rows = append(rows, row)
	}
	s.render(w, r, http.StatusOK, "schedule", s.pageFor(r, sess, "Schedule", "schedule", rows))
}

func templateEscape(s string) string { return template.HTMLEscapeString(s) }
