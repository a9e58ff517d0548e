package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// tab is a browser tab of its own browser context: its own cookies, so its
// own session.
func tab(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(env.browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(c, steps...); err != nil {
		t.Fatal(err)
	}
}

// text is what a person reads in the element (innerText), "" if there is
// none, or while the page is being replaced by the next.
func text(t *testing.T, ctx context.Context, css string) string {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(c, chromedp.Evaluate[string](fmt.Sprintf(
		`(function(){var e=document.querySelector(%q); return e ? e.innerText : ""})()`, css)))
	if err != nil {
		t.Logf("reading %s: %v", css, err)
		return ""
	}
	return s
}

// waitText waits until the element's text satisfies ok; the limit guards
// against a hang.
func waitText(t *testing.T, ctx context.Context, css string, limit time.Duration, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		if last = text(t, ctx, css); ok(last) {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not as expected within %v; the page reads:\n%s", css, limit, last)
	return last
}

func contains(sub string) func(string) bool {
	return func(s string) bool { return strings.Contains(s, sub) }
}

// click presses a button or link the way a person does, found and pressed
// in one step: a live update may replace the element between two steps.
func click(t *testing.T, ctx context.Context, css string) {
	t.Helper()
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(
		`(function(){var e=document.querySelector(%q); if (!e || e.disabled) return false; e.click(); return true})()`, css)))
	if err != nil || !ok {
		t.Fatalf("%s: nothing to press (%v)", css, err)
	}
}

// vmPage is a tab logged in as who, on vm's page (opened once the overview
// lists vm), which shows shows.
func vmPage(t *testing.T, who, vm, shows string) context.Context {
	t.Helper()
	ctx := tab(t)
	login(t, ctx, who, password)
	waitText(t, ctx, "#live", 10*time.Second, contains(vm))
	do(t, ctx, chromedp.Navigate(env.url+"/vm/"+vm))
	waitText(t, ctx, "#live", 10*time.Second, contains(shows))
	return ctx
}

func login(t *testing.T, ctx context.Context, name, pw string) {
	t.Helper()
	do(t, ctx, chromedp.Navigate(env.url+"/login"),
		chromedp.SendKeys(chromedp.CSS("#name"), name),
		chromedp.SendKeys(chromedp.CSS("#password"), pw),
		chromedp.Click(chromedp.CSS(`form.login button[type=submit]`)))
}

// updateScreenshots writes the pages' screenshots into docs/; without it
// they are taken and checked, and a working tree stays as it was.
var updateScreenshots = flag.Bool("screenshots", false, "write the screenshots into docs/")

func screenshot(t *testing.T, ctx context.Context, file string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) || len(png) < 10<<10 {
		t.Fatalf("screenshot %s: %d bytes, not a page's PNG", file, len(png))
	}
	if !*updateScreenshots {
		file = filepath.Join(t.TempDir(), filepath.Base(file))
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// leafRow is the row of the VM page's backup table that shows leaf.
func leafRow(leaf string) string { return fmt.Sprintf(`tr[data-leaf=%q]`, leaf) }

func leaves(t *testing.T, vm string) []ldapschema.Leaf {
	t.Helper()
	ls, err := control.Leaves(env.admin, vm)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// A wrong password is refused with the generic message; the right one shows
// every VM with its last result.
func TestLoginAndOverview(t *testing.T) {
	ctx := tab(t)
	login(t, ctx, operator, "wrong")
	msg := waitText(t, ctx, "main", 10*time.Second, contains("Login failed"))
	if !strings.Contains(msg, "wrong name or password") || strings.Contains(msg, "Backups") {
		t.Fatalf("after a wrong password the page reads:\n%s", msg)
	}
	login(t, ctx, operator, password)
	waitText(t, ctx, "#live", 10*time.Second, contains(vmIdle))
	for _, vm := range []string{vmBusy, vmIdle} {
		row := text(t, ctx, fmt.Sprintf(`tr[data-vm=%q]`, vm))
		if !strings.Contains(row, host) || !strings.Contains(row, "0 success") || !strings.Contains(row, "vmpool-1") {
			t.Errorf("%s: the overview's row reads %q", vm, row)
		}
	}
	old := text(t, ctx, fmt.Sprintf(`tr[data-vm=%q]`, vmOld))
	meaning := ldapschema.ReturnCode(ldapschema.RCNoSpace).String()
	if !strings.Contains(strings.ToLower(old), "overdue") || !strings.Contains(old, "3d") || !strings.Contains(old, meaning) {
		t.Errorf("%s: want overdue, 3 days old, last result %q; the row reads %q", vmOld, meaning, old)
	}
	if !strings.Contains(text(t, ctx, "header"), "uid=operator") {
		t.Errorf("the header does not name who is logged in:\n%s", text(t, ctx, "header"))
	}
	screenshot(t, ctx, "../../docs/web-ui-overview.png")

	// Search narrows the list, on the server.
	do(t, ctx, chromedp.SendKeys(chromedp.CSS("#q"), "idle"))
	waitText(t, ctx, "#live", 10*time.Second, func(s string) bool { return !strings.Contains(s, vmBusy) && strings.Contains(s, vmIdle) })

	// The schedule: every VM's plan, as controld schedule gives it.
	plans, err := control.ListSchedule(env.admin, time.Local, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	click(t, ctx, `nav a[href="/schedule"]`)
	sched := waitText(t, ctx, "main", 10*time.Second, contains("Next runs"))
	for _, p := range plans {
		if !strings.Contains(sched, p.VM) || !strings.Contains(sched, string(p.Status)) {
			t.Errorf("the schedule page does not show %s (%s):\n%s", p.VM, p.Status, sched)
		}
	}
}

// "Back up now" on a running VM: the leaf's modes appear live until
// finished; then a restore: the differences, a cancel that leaves the VM
// untouched, and a restore confirmed that brings back the guest's data.
func TestBackupNowAndRestore(t *testing.T) {
	ctx := vmPage(t, operator, vmBusy, env.leaf)

	before := len(leaves(t, vmBusy))
	click(t, ctx, "#backup-now")
	flash := waitText(t, ctx, "main", 10*time.Second, contains("started"))
	ls := leaves(t, vmBusy)
	if len(ls) != before+1 {
		t.Fatalf("%d leaves after Back up now, want %d; the page reads:\n%s", len(ls), before+1, flash)
	}
	newLeaf := ls[len(ls)-1].Name
	// From here the page must follow by itself: a marker on the window
	// survives only if it never reloads, and an observer notes every mode
	// and progress text the new leaf's row shows.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(function(){
		window.stayed = true; window.seen = [];
		var note = function(){ var r = document.querySelector(%q);
			if (r) { var s = r.querySelector(".mode").innerText + (r.querySelector(".progress-text") ? " | " + r.querySelector(".progress-text").innerText : "");
				if (window.seen[window.seen.length-1] !== s) window.seen.push(s); } };
		note(); new MutationObserver(note).observe(document.getElementById("live"), {childList: true, subtree: true, characterData: true});
		return true })()`, leafRow(newLeaf)))); err != nil {
		t.Fatal(err)
	}
	waitText(t, ctx, leafRow(newLeaf)+" .mode", 4*time.Minute, func(s string) bool { return s == "finished" })
	var seen []string
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.stayed === true ? JSON.stringify(window.seen) : "reloaded"`))
	if err != nil || json.Unmarshal([]byte(raw), &seen) != nil {
		t.Fatalf("the page reloaded instead of following live (%v): %s", err, raw)
	}
	t.Logf("the page showed: %s", strings.Join(seen, " → "))
	var modes, progress int
	for _, s := range seen {
		if !strings.HasPrefix(s, "initialize") && !strings.HasPrefix(s, "finished") {
			modes++
		}
		if strings.Contains(s, "MiB of") {
			progress++
		}
	}
	if modes < 2 || !strings.HasPrefix(seen[len(seen)-1], "finished") {
		t.Fatalf("the page did not follow the backup's modes live: %q", seen)
	}
	if row := text(t, ctx, leafRow(newLeaf)); !strings.Contains(row, "0 success") || !strings.Contains(row, "MiB") {
		t.Fatalf("the finished backup's row reads %q", row)
	}
	screenshot(t, ctx, "../../docs/web-ui-vm.png")
	_ = progress // a 64 MiB copy may finish before its first progress write; logged above

	// The guest writes new data and the VM is renamed: what a restore undoes.
	if err := testenv.WriteGuestPattern(env.lv.URI, env.lv.LogDir, vmBusy, "vda", 0x11, testenv.PatternOffset, testenv.PatternLength); err != nil {
		t.Fatal(err)
	}
	if err := env.admin.Update(env.admin.Tree.VM(vmBusy), "", map[string][]string{ldapschema.AttrDisplayName: {"renamed since"}}); err != nil {
		t.Fatal(err)
	}

	startRestore := func() string {
		t.Helper()
		click(t, ctx, "#restore-"+newLeaf)
		diff := waitText(t, ctx, "#live", 2*time.Minute, contains("What the restore changes"))
		if !strings.Contains(diff, "sstDisplayName") || !strings.Contains(diff, "renamed since") {
			t.Fatalf("the differences do not show the new name:\n%s", diff)
		}
		// The other backup may not be restored meanwhile, and the page says why.
		if why := text(t, ctx, leafRow(env.leaf)); !strings.Contains(why, "being backed up or restored") {
			t.Fatalf("a second restore is offered while one runs; the row reads %q", why)
		}
		return diff
	}
	guestReads := func(pattern byte) {
		t.Helper()
		if err := testenv.VerifyGuestPattern(env.lv.URI, env.lv.LogDir, vmBusy, "vda", pattern, testenv.PatternOffset, testenv.PatternLength); err != nil {
			t.Fatalf("the guest does not read 0x%02x: %v", pattern, err)
		}
	}

	startRestore()
	// A second restore forced past the disabled button is refused by the
	// server, by the same rule, and the page says why.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(
		`(function(){var b=document.querySelector("#restore-%s"); b.disabled=false; b.click(); return true})()`, env.leaf))); err != nil {
		t.Fatal(err)
	}
	msg := waitText(t, ctx, "main", 10*time.Second, contains("Restore refused"))
	if !strings.Contains(msg, "being backed up or restored") || !strings.Contains(msg, "What the restore changes") {
		t.Fatalf("a second restore: the page reads\n%s", msg)
	}
	click(t, ctx, "#restore-cancel")
	waitText(t, ctx, leafRow(newLeaf), 2*time.Minute, contains("last restore: cancelled"))
	guestReads(0x11)

	startRestore()
	click(t, ctx, "#restore-confirm")
	row := waitText(t, ctx, leafRow(newLeaf), 4*time.Minute, contains("last restore: done"))
	if !strings.Contains(row, "finished") {
		t.Fatalf("after the restore the row reads %q", row)
	}
	guestReads(vmPattern)
}

// A person whose rights do not allow writing leaves sees the directory's
// refusal, and nothing changes.
func TestReadOnlyUserRefused(t *testing.T) {
	ctx := vmPage(t, viewer, vmIdle, env.leaf)
	before := len(leaves(t, vmIdle))
	click(t, ctx, "#backup-now")
	msg := waitText(t, ctx, "main", 10*time.Second, contains("refused"))
	if !strings.Contains(msg, "insufficient access rights") {
		t.Fatalf("the page does not show the directory's refusal:\n%s", msg)
	}
	click(t, ctx, "#restore-"+env.leaf)
	msg = waitText(t, ctx, "main", 10*time.Second, contains("Restore refused"))
	if !strings.Contains(msg, "insufficient access rights") {
		t.Fatalf("the page does not show the directory's refusal of the restore:\n%s", msg)
	}
	if ls := leaves(t, vmIdle); len(ls) != before || ls[len(ls)-1].Mode != "finished" {
		t.Fatalf("the refused actions changed the leaves: %+v", ls)
	}

	// On a phone's screen the page does not widen beyond it (the tables
	// scroll in their own region), and from the keyboard the first stop is
	// the way past the menu.
	do(t, ctx, chromedp.EmulateViewport(390, 844), chromedp.Navigate(env.url+"/"))
	waitText(t, ctx, "#live", 10*time.Second, contains(vmIdle))
	fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`))
	if err != nil || !fits {
		t.Errorf("the overview is wider than a phone's screen (%v)", err)
	}
	do(t, ctx, chromedp.KeyEvent("\t"))
	if first := text(t, ctx, ":focus"); first != "Skip to content" {
		t.Errorf("the first Tab stop reads %q", first)
	}
	do(t, ctx, chromedp.EmulateReset())

	// Log out: back to the form, and the pages are closed to this browser.
	click(t, ctx, `form.logout button`)
	waitText(t, ctx, "main", 10*time.Second, contains("Log in"))
	do(t, ctx, chromedp.Navigate(env.url+"/vm/"+vmIdle))
	if page := waitText(t, ctx, "main", 10*time.Second, contains("Log in")); strings.Contains(page, env.leaf) {
		t.Fatalf("after logging out the VM's page is shown:\n%s", page)
	}
}

// A long copy's progress, as a node publishes it, appears live as a bar with
// its rate and time left, and goes when the step ends. The leaf belongs to
// a VM of a host without a node, so nothing but this test writes it.
func TestProgressLive(t *testing.T) {
	const vm = "web-copy"
	cfg := testenv.LocalConfig("/nowhere/backup", "/nowhere/retain", "")
	if err := testenv.VMEntries(env.admin, "web-far", "vmpool-2", vm, nil, &cfg); err != nil {
		t.Fatal(err)
	}
	ctx := vmPage(t, operator, vm, "No backup yet")
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.stayed = true`)); err != nil {
		t.Fatal(err)
	}

	name := fsm.FormatTime(time.Now())
	dn := env.admin.Tree.Leaf(vm, name)
	if err := env.admin.Add(ldapschema.NewLeafAddRequest(env.admin.Tree, vm, name, "retaining", name)); err != nil {
		t.Fatal(err)
	}
	bar := func(text string, percent int) {
		t.Helper()
		if err := env.admin.Update(dn, "", map[string][]string{ldapschema.AttrExecutionTime: {"snapshot: 1.5", "progress: " + text}}); err != nil {
			t.Fatal(err)
		}
		waitText(t, ctx, leafRow(name), 10*time.Second, contains(text))
		got, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelector(%q).value`, leafRow(name)+" progress")))
		if err != nil || got != percent {
			t.Fatalf("progress bar at %d (%v), want %d", got, err, percent)
		}
	}
	bar("retain 120.0 MiB of 480.0 MiB, 85.3 MiB/s, 4s left", 25)
	bar("retain 360.0 MiB of 480.0 MiB, 86.1 MiB/s, 1s left", 75)
	if err := env.admin.Update(dn, "", map[string][]string{ldapschema.AttrMode: {"finished"}, ldapschema.AttrReturnValue: {"0"},
		ldapschema.AttrExecutionTime: {"snapshot: 1.5", "retain: 5.6", "retainBytes: 503316480"}}); err != nil {
		t.Fatal(err)
	}
	row := waitText(t, ctx, leafRow(name), 10*time.Second, contains("finished"))
	if strings.Contains(row, "MiB/s") || !strings.Contains(row, "480.0 MiB") {
		t.Fatalf("the finished row reads %q", row)
	}
	if stayed, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.stayed === true`)); !stayed {
		t.Fatal("the page reloaded instead of following live")
	}
}
