// Package ldapschema owns the wire format of the directory that coordinates
// stoney conductor: the attribute and object class names (attrs.go), the schema
// itself (SchemaLDIF, shipped as deploy/ldap/stoney-conductor-schema.ldif), the
// DN layout below the base (Tree), leaf names and timestamps, the return codes
// the web UI shows, one typed struct per object class with its parser and its
// add request, and LDIF for saving and restoring a VM's subtree. The names,
// OIDs, layout and codes are the original stoney cloud's, so its web UI and
// existing directories keep working.
//
// The parsers and formatters do no I/O: they turn *ldap.Entry into typed
// values and back. The Store (store.go) and its watch do the talking.
//
//	tree := ldapschema.Tree{Base: "o=stepping-stone,c=ch"}
//	leaf, err := ldapschema.ParseLeaf(tree, entry) // strict DN and name checks
//	if err != nil {
//		return err // errors.Is(err, ldapschema.ErrMalformed): report once, do not retry
//	}
//	cfg, from, err := ldapschema.EffectiveConfig(vmBackup, poolBackup, global)
//	if errors.Is(err, ldapschema.ErrNoConfig) {
//		return ldapschema.RCNoConfig // the leaf's return value
//	}
//	pool, _ := disk.StoragePool()
//	dir := filepath.Join(cfg.RetainDir, vm.StorageKind(), pool, leaf.VM, leaf.Name)
//	saved := ldapschema.FormatLDIF(vmSubtree) // <vm>.ldif.<leaf>
//
// Names taken from the directory end up in file paths: ParseLeafDN, ParseVMDN
// and Disk.FileName refuse anything SafeName refuses.
package ldapschema
