package testenv

import (
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// VMEntries writes the directory side of a test VM: the VM entry on host, its
// ou=devices, one disk entry per disk, and (when cfg is not nil) a VM-level
// backup configuration.
func VMEntries(store *ldapschema.Store, host, pool, name string, disks []DiskSpec, cfg *ldapschema.BackupConfig) error {
	tree := store.Tree
	if err := store.Add(ldapschema.NewVMAddRequest(tree, ldapschema.VM{Name: name, Node: host, Pool: pool})); err != nil {
		return err
	}
	if err := store.Add(ldapschema.NewDevicesAddRequest(tree, name)); err != nil {
		return err
	}
	for _, d := range disks {
		if err := store.Add(ldapschema.NewDiskAddRequest(tree, name, ldapschema.Disk{Target: d.Target, SourceFile: d.Path})); err != nil {
			return err
		}
	}
	if cfg == nil {
		return nil
	}
	return store.Add(ldapschema.NewBackupConfigAddRequest(tree.VMBackup(name), *cfg))
}

// LocalConfig is a backup configuration for a test machine: files owned by
// root (there is no vm-storage group), the given directories.
func LocalConfig(backup, retain, ramdisk string) ldapschema.BackupConfig {
	return ldapschema.BackupConfig{
		RootDir: backup, RetainDir: retain, RAMDisk: ramdisk,
		Format: "qcow2", Owner: "root", Group: "root", Permission: 0o660,
		DirOwner: "root", DirGroup: "root", DirPermission: 0o770,
		Iterations: 1, CronMinute: []string{"0"}, CronHour: []string{"3"},
		CronDay: []string{"*"}, CronMonth: []string{"*"}, CronDayOfWeek: []string{"*"},
	}
}
