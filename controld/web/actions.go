package web

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/stoneycloud/stoney-conductor/controld/control"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// Every action is a POST the session's CSRF token came with (authed), does
// one call into control bound as the person, and goes back to the VM's
// page with the outcome as a message: control and fsm decide, the page
// reports.

func (s *Server) back(w http.ResponseWriter, r *http.Request, vm string) {
	http.Redirect(w, r, "/vm/"+url.PathEscape(vm), http.StatusSeeOther)
}

// names reads the VM and (when leaf) the backup of an action, both SafeNames.
func names(r *http.Request, leaf bool) (vm, name string, err error) {
	vm = r.PathValue("vm")
	if err = ldapschema.SafeName(vm); err != nil {
		return "", "", fmt.Errorf("VM name %q: %w", vm, err)
	}
	if leaf {
		name = r.PostFormValue("leaf")
		if err = ldapschema.SafeName(name); err != nil {
			return "", "", fmt.Errorf("backup %q: %w", name, err)
		}
	}
	return vm, name, nil
}

// act runs one action on the VM (and, when leaf, the backup) the request
// names: an error of do is flashed as a refusal of what, do's message
// otherwise; then it goes back to the VM's page.
func (s *Server) act(w http.ResponseWriter, r *http.Request, sess *session, what string, leaf bool,
	do func(vm, leaf string) (done string, err error)) {
	vm, name, err := names(r, leaf)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	done, err := do(vm, name)
	log := s.o.Log.WithField("user", sess.dn)
	if err != nil {
		log.WithError(err).Warn("web: " + what + " refused")
		sess.addFlash(true, what+" refused. "+describe(err))
	} else {
		log.Info("web: " + done)
		sess.addFlash(false, done)
	}
	s.back(w, r, vm)
}

func (s *Server) backupNow(w http.ResponseWriter, r *http.Request, sess *session) {
	s.act(w, r, sess, "Back up now", false, func(vm, _ string) (string, error) {
		name, started := control.StartBackups(sess.store, []string{vm}, s.o.Now())
		return fmt.Sprintf("Backup %s of %s started.", name, vm), started[0].Err
	})
}

func (s *Server) restoreStart(w http.ResponseWriter, r *http.Request, sess *session) {
	s.act(w, r, sess, "Restore", true, func(vm, leaf string) (string, error) {
		_, err := control.StartRestore(sess.store, vm, leaf, s.o.Now())
		return fmt.Sprintf("Restore of %s from %s started: the node fetches the backup's definition and compares it with today's VM. Nothing is changed before you confirm.", vm, leaf), err
	})
}

func (s *Server) restoreContinue(w http.ResponseWriter, r *http.Request, sess *session) {
	s.act(w, r, sess, "Restore", true, func(vm, leaf string) (string, error) {
		err := control.ContinueRestore(sess.store, sess.store.Tree.Leaf(vm, leaf))
		return fmt.Sprintf("Restoring %s from %s: the node copies the backup, then replaces the VM.", vm, leaf), err
	})
}

func (s *Server) restoreCancel(w http.ResponseWriter, r *http.Request, sess *session) {
	s.act(w, r, sess, "Cancel", true, func(vm, leaf string) (string, error) {
		err := control.CancelRestore(sess.store, sess.store.Tree.Leaf(vm, leaf), s.o.Now())
		return fmt.Sprintf("Restore of %s from %s cancelled; the VM is untouched.", vm, leaf), err
	})
}
