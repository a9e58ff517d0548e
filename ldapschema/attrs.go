package ldapschema

// Attribute type names, spelled as the schema declares them. Servers compare
// names case-insensitively; the parsers here do too.
const (
	AttrObjectClass = "objectClass"
	AttrOU          = "ou"
	AttrDescription = "description"
	AttrEntryUUID   = "entryUUID"
	AttrEntryCSN    = "entryCSN"

	// sstProvisioning: the state of one backup leaf.
	AttrMode          = "sstProvisioningMode"
	AttrState         = "sstProvisioningState"
	AttrExecutionDate = "sstProvisioningExecutionDate"
	AttrReturnValue   = "sstProvisioningReturnValue"
	AttrExecutionTime = "sstProvisioningExecutionTime"

	// sstVirtualizationVirtualMachine and its pool.
	AttrNode                   = "sstNode"
	AttrVirtualMachine         = "sstVirtualMachine"
	AttrVirtualMachinePool     = "sstVirtualMachinePool"
	AttrVirtualMachinePoolType = "sstVirtualMachinePoolType"
	AttrVirtualMachineType     = "sstVirtualMachineType"
	AttrVirtualMachineSubType  = "sstVirtualMachineSubType"
	AttrDisplayName            = "sstDisplayName"
	AttrMemory                 = "sstMemory"
	AttrVCPU                   = "sstVCPU"
	AttrStatus                 = "sstStatus"
	AttrType                   = "sstType"
	AttrClockOffset            = "sstClockOffset"
	AttrOnCrash                = "sstOnCrash"
	AttrOnPowerOff             = "sstOnPowerOff"
	AttrOnReboot               = "sstOnReboot"
	AttrOSArchitecture         = "sstOSArchitecture"
	AttrOSBootDevice           = "sstOSBootDevice"
	AttrOSMachine              = "sstOSMachine"
	AttrOSType                 = "sstOSType"
	AttrMigrationNode          = "sstMigrationNode"

	// sstVirtualizationVirtualMachineDisk.
	AttrDisk       = "sstDisk"
	AttrDevice     = "sstDevice"
	AttrSourceFile = "sstSourceFile"
	AttrTargetBus  = "sstTargetBus"
	AttrDriverName = "sstDriverName"
	AttrDriverType = "sstDriverType"
	AttrReadonly   = "sstReadonly"

	// sstCronObjectClass: when a VM is backed up.
	AttrCronMinute    = "sstCronMinute"
	AttrCronHour      = "sstCronHour"
	AttrCronDay       = "sstCronDay"
	AttrCronMonth     = "sstCronMonth"
	AttrCronDayOfWeek = "sstCronDayOfWeek"
	AttrCronActive    = "sstCronActive"
	AttrCronCommand   = "sstCronCommand"

	// sstVirtualizationBackupObjectClass: how a VM is backed up.
	AttrBackupRootDirectory          = "sstBackupRootDirectory"
	AttrBackupRetainDirectory        = "sstBackupRetainDirectory"
	AttrBackupRamDiskLocation        = "sstBackupRamDiskLocation"
	AttrRestoreVMWithoutState        = "sstRestoreVMWithoutState"
	AttrBackupExcludeFromBackup      = "sstBackupExcludeFromBackup"
	AttrBackupNumberOfIterations     = "sstBackupNumberOfIterations"
	AttrBandwidthMerge               = "sstVirtualizationBandwidthMerge"
	AttrForceStart                   = "sstVirtualizationVirtualMachineForceStart"
	AttrSequenceStop                 = "sstVirtualizationVirtualMachineSequenceStop"
	AttrSequenceStart                = "sstVirtualizationVirtualMachineSequenceStart"
	AttrDiskImagePermission          = "sstVirtualizationDiskImagePermission"
	AttrDiskImageFormat              = "sstVirtualizationDiskImageFormat"
	AttrDiskImageOwner               = "sstVirtualizationDiskImageOwner"
	AttrDiskImageGroup               = "sstVirtualizationDiskImageGroup"
	AttrDiskImageDirectoryOwner      = "sstVirtualizationDiskImageDirectoryOwner"
	AttrDiskImageDirectoryGroup      = "sstVirtualizationDiskImageDirectoryGroup"
	AttrDiskImageDirectoryPermission = "sstVirtualizationDiskImageDirectoryPermission"
)

// Object class names.
const (
	ClassTop                = "top"
	ClassOrganizationalUnit = "organizationalUnit"
	ClassProvisioning       = "sstProvisioning"
	ClassCron               = "sstCronObjectClass"
	ClassBackup             = "sstVirtualizationBackupObjectClass"
	ClassVirtualMachine     = "sstVirtualizationVirtualMachine"
	ClassDisk               = "sstVirtualizationVirtualMachineDisk"
	// ClassPool is the structural class of a VM pool entry
	// (sstVirtualMachinePool=<id>,ou=virtual machine pools,...).
	ClassPool = "sstVirtualMachines"
)

// Attribute values with a fixed meaning on the wire.
const (
	// LDAP Boolean syntax is upper case.
	ValueTrue  = "TRUE"
	ValueFalse = "FALSE"
	// DeviceDisk is sstDevice of a hard disk (others: cdrom, floppy).
	DeviceDisk = "disk"
	// VMTypeTemplate is sstVirtualMachineType of a VM template.
	VMTypeTemplate = "template"
	// Storage kinds: the directory level below the backup and retain roots.
	StoragePersistent = "vm-persistent"
	StorageTemplates  = "vm-templates"
)
