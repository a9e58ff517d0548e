package recovery

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/stoneycloud/stoney-conductor/fsm"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// ImportResult is what the import did for one VM.
type ImportResult struct {
	VM         string   `json:"vm"`
	Leaves     []string `json:"leaves,omitempty"`  // the leaves now in the directory
	Created    []string `json:"created,omitempty"` // every entry created, in order
	Error      string   `json:"error,omitempty"`
	RolledBack bool     `json:"rolledBack,omitempty"`
}

// RecoveredPrefix starts the execution-time value of a recovered leaf, so an
// operator can tell it from one the daemons made.
const RecoveredPrefix = "recovered: "

// Import creates the entries of every ready VM of the plan:
// missing containers first, then per VM its entry and disks from the saved
// LDIF (when agreed), its ou=backup entry and one finished leaf per new
// iteration. A VM whose import fails is rolled back (what was created for
// it is deleted, newest first) and the others go on. It never modifies or
// deletes an entry it did not create.
func Import(store *ldapschema.Store, plan *Plan, now time.Time) ([]ImportResult, error) {
	ready := plan.Ready()
	if len(ready) == 0 {
		return nil, nil
	}
	for _, dn := range plan.Containers {
		req := ldap.NewAddRequest(dn, nil)
		req.Attribute(ldapschema.AttrObjectClass, []string{ldapschema.ClassTop, ldapschema.ClassOrganizationalUnit})
		rdn, _, _ := strings.Cut(dn, ",")
		_, val, _ := strings.Cut(rdn, "=")
		req.Attribute(ldapschema.AttrOU, []string{val})
		if err := store.Add(req); err != nil && !errors.Is(err, ldapschema.ErrConflict) {
			return nil, fmt.Errorf("create %s: %w", dn, err)
		}
	}
	var out []ImportResult
	for _, p := range ready {
		out = append(out, importVM(store, p, now))
	}
	return out, nil
}

func importVM(store *ldapschema.Store, p *VMPlan, now time.Time) ImportResult {
	tree := store.Tree
	res := ImportResult{VM: p.VM}
	add := func(req *ldap.AddRequest) error {
		if err := store.Add(req); err != nil {
			if errors.Is(err, ldapschema.ErrConflict) {
				return fmt.Errorf("%s exists already (the directory changed since the validation): %w", req.DN, err)
			}
			if ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) {
				// controld's own account may add leaves and containers only.
				return fmt.Errorf("create %s: %w (bind as the directory's administrator to re-create VMs and configurations)", req.DN, err)
			}
			return fmt.Errorf("create %s: %w", req.DN, err)
		}
		res.Created = append(res.Created, req.DN)
		return nil
	}
	err := func() error {
		backupDN := ldapschema.NormalizeDN(tree.VMBackup(p.VM))
		if p.Entry == EntryRecreate {
			for _, e := range p.saved {
				if ldapschema.NormalizeDN(e.DN) == backupDN {
					continue // added below, with the same rule as for an existing VM
				}
				if err := add(ldapschema.AddRequestOf(e)); err != nil {
					return err
				}
			}
		}
		switch p.BackupEntry {
		case BackupEntryFromLDIF:
			if err := add(ldapschema.AddRequestOf(savedEntry(p.saved, tree.VMBackup(p.VM)))); err != nil {
				return err
			}
		case BackupEntryContainer:
			req := ldap.NewAddRequest(tree.VMBackup(p.VM), nil)
			req.Attribute(ldapschema.AttrObjectClass, []string{ldapschema.ClassTop, ldapschema.ClassOrganizationalUnit})
			req.Attribute(ldapschema.AttrOU, []string{"backup"})
			if err := add(req); err != nil {
				return err
			}
		}
		stamp := RecoveredPrefix + fsm.FormatTime(now)
		for _, it := range p.New() {
			req := ldapschema.NewLeafAddRequest(tree, p.VM, it.Leaf, string(fsm.Finished), it.Leaf)
			req.Attribute(ldapschema.AttrExecutionTime, []string{stamp, "retainBytes: " + strconv.FormatInt(it.Bytes, 10)})
			if err := add(req); err != nil {
				return err
			}
			res.Leaves = append(res.Leaves, it.Leaf)
		}
		return nil
	}()
	if err == nil {
		return res
	}
	res.Error = err.Error()
	res.Leaves = nil
	var left []string
	for i := len(res.Created) - 1; i >= 0; i-- {
		if derr := store.Delete(res.Created[i]); derr != nil {
			left = append(left, res.Created[i])
		}
	}
	if len(left) > 0 {
		res.Error += "; rolling back failed, still in the directory: " + strings.Join(left, ", ")
	} else {
		res.RolledBack = true
		res.Created = nil
	}
	return res
}
