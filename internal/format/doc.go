// Package format is the on-disk backup format: where each iteration's files
// live, what they are named, how a state file, a domain XML's disks and a
// disk image are recognised and checked; and, in chunks storage, the chunk
// store of a backup root and the index of each disk of each iteration.
//
// The node writes this format and the recovery reads it back; both ask this
// package, so the two never disagree on a name or a check. It does no
// hypervisor calls and builds without cgo: controld uses it too.
//
//	l := format.Layout{RetainRoot: "/srv/retain", BackupRoot: "/srv/backup",
//		Kind: "vm-persistent", Pool: "pool-1", VM: "vm-001", Leaf: "20240101T000000Z"}
//	l.BackupDisk("/srv/images/pool-1/vm-001.qcow2")
//	// /srv/backup/vm-persistent/pool-1/vm-001/20240101T000000Z/vm-001.qcow2.20240101T000000Z
//	err := format.CheckImage(ctx, path, "qcow2") // complete and healthy, or why not
package format
