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

func (s *Server) act(sess *session, what string, err error, done string) {
	log := s.o.Log.WithField("user", sess.dn)
	if err != nil {
		log.WithError(err).Warn("web: " + what + " refused")
		sess.addFlash(true, what+" refused. "+describe(err))
		return
	}
	log.Info("web: " + done)
	sess.addFlash(false, done)
}

func (s *Server) backupNow(w http.ResponseWriter, r *http.Request, sess *session) {
	vm, _, err := names(r, false)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name, started := control.StartBackups(sess.store, []string{vm}, s.o.Now())
	s.act(sess, "Back up now", started[0].Err, fmt.Sprintf("Backup %s of %s started.", name, vm))
	s.back(w, r, vm)
}

func (s *Server) restoreStart(w http.ResponseWriter, r *http.Request, sess *session) {
	vm, leaf, err := names(r, true)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_, err = control.StartRestore(sess.store, vm, leaf, s.o.Now())
	s.act(sess, "Restore", err, fmt.Sprintf("Restore of %s from %s started: the node fetches the backup's definition and compares it with today's VM. Nothing is changed before you confirm.", vm, leaf))
	s.back(w, r, vm)
}

func (s *Server) restoreContinue(w http.ResponseWriter, r *http.Request, sess *session) {
	vm, leaf, err := names(r, true)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	err = control.ContinueRestore(sess.store, sess.store.Tree.Leaf(vm, leaf))
	s.act(sess, "Restore", err, fmt.Sprintf("Restoring %s from %s: the node copies the backup, then replaces the VM.", vm, leaf))
	s.back(w, r, vm)
}

func (s *Server) restoreCancel(w http.ResponseWriter, r *http.Request, sess *session) {
	vm, leaf, err := names(r, true)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	err = control.CancelRestore(sess.store, sess.store.Tree.Leaf(vm, leaf), s.o.Now())
	s.act(sess, "Cancel", err, fmt.Sprintf("Restore of %s from %s cancelled; the VM is untouched.", vm, leaf))
	s.back(w, r, vm)
}
