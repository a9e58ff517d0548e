// Package recovery rebuilds the backup catalog from the backup storage:
// `controld recover`, in the way of `lxd recover`. The directory is the
// catalog of the backups; when it is lost, restored from an old dump or a
// VM's ou=backup subtree is deleted, the files are still on the storage and
// nobody knows them.
//
//	Scan      reads the backup roots into iterations, checking every file (scan.go)
//	Validate  compares them with the directory, changing nothing (plan.go)
//	Import    re-creates the missing entries, all or nothing per VM (import.go)
//	Check     the other direction: leaves whose files are gone (check.go)
//	Run       the command's dialogue, interactive or unattended (session.go)
//
// It runs in exactly one place: where the backup storage is mounted, from
// the operator's command. controld otherwise never reads backup files, and
// neither daemon imports this package; the files' format is read with
// internal/format, the one the node writes with, so the two cannot drift
// apart. Recovery never changes a file and never modifies or deletes an
// entry it did not create.
package recovery
