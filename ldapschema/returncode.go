package ldapschema

import "strconv"

// ReturnCode is a value of sstProvisioningReturnValue. The numbers are the
// original node daemon's; the web UI shows them, so they must not change.
type ReturnCode int

// Return codes. 14 was never assigned.
const (
	RCSuccess                 ReturnCode = 0
	RCUndefined               ReturnCode = 1
	RCMissingParameter        ReturnCode = 2
	RCRAMDiskInvalid          ReturnCode = 3
	RCRAMDiskFull             ReturnCode = 4
	RCCannotSaveState         ReturnCode = 5
	RCCannotWriteBackup       ReturnCode = 6
	RCCannotCopyToBackup      ReturnCode = 7
	RCCannotCopyImage         ReturnCode = 8
	RCCannotCopyXML           ReturnCode = 9
	RCCannotCopyBackendFile   ReturnCode = 10
	RCCannotMergeImages       ReturnCode = 11
	RCCannotRemoveOldImage    ReturnCode = 12
	RCCannotRemoveFile        ReturnCode = 13
	RCCannotCreateImage       ReturnCode = 15
	RCCannotRenameImage       ReturnCode = 16
	RCCannotConnectBackend    ReturnCode = 17
	RCWrongState              ReturnCode = 18
	RCCannotChownImage        ReturnCode = 19
	RCCannotChmodImage        ReturnCode = 20
	RCCannotRestoreMachine    ReturnCode = 21
	RCCannotLockMachine       ReturnCode = 22
	RCCannotFindMachine       ReturnCode = 23
	RCCannotCopyStateToRetain ReturnCode = 24
	RCRetainRootMissing       ReturnCode = 25
	RCBackupRootMissing       ReturnCode = 26
	RCCannotCreateDirectory   ReturnCode = 27
	RCCannotSaveXML           ReturnCode = 28
	RCCannotSaveBackendEntry  ReturnCode = 29
	RCCannotChownDirectory    ReturnCode = 30
	RCCannotChmodDirectory    ReturnCode = 31
	RCNoConfig                ReturnCode = 32
	RCBackendXMLInconsistent  ReturnCode = 33
	RCCannotCreateTarball     ReturnCode = 34
	RCUnsupportedProtocol     ReturnCode = 35
	RCUnknownBackend          ReturnCode = 36
	RCMissingFiles            ReturnCode = 37
	RCCorruptImage            ReturnCode = 38
	RCUnsupportedParameter    ReturnCode = 39
	RCCannotMoveImageBack     ReturnCode = 40
	RCCannotDefineMachine     ReturnCode = 41
	RCCannotStartMachine      ReturnCode = 42
	RCUndefinedObject         ReturnCode = 43
	RCCannotReadState         ReturnCode = 44
	RCCannotReadXML           ReturnCode = 45
	RCRetainNotEmpty          ReturnCode = 46
	RCNoSpace                 ReturnCode = 47
	RCNoSpaceInfo             ReturnCode = 48
)

var returnCodeText = map[ReturnCode]string{
	RCSuccess:                 "success",
	RCUndefined:               "undefined error",
	RCMissingParameter:        "missing parameter in config file",
	RCRAMDiskInvalid:          "configured RAM disk is not valid",
	RCRAMDiskFull:             "not enough space on RAM disk",
	RCCannotSaveState:         "cannot save machine state",
	RCCannotWriteBackup:       "cannot write to backup location",
	RCCannotCopyToBackup:      "cannot copy file to backup location",
	RCCannotCopyImage:         "cannot copy image",
	RCCannotCopyXML:           "cannot copy XML",
	RCCannotCopyBackendFile:   "cannot copy backend file",
	RCCannotMergeImages:       "cannot merge disk images",
	RCCannotRemoveOldImage:    "cannot remove old disk image",
	RCCannotRemoveFile:        "cannot remove file",
	RCCannotCreateImage:       "cannot create empty disk image",
	RCCannotRenameImage:       "cannot rename disk image",
	RCCannotConnectBackend:    "cannot connect to backend",
	RCWrongState:              "wrong state information",
	RCCannotChownImage:        "cannot set disk image ownership",
	RCCannotChmodImage:        "cannot set disk image permission",
	RCCannotRestoreMachine:    "cannot restore machine",
	RCCannotLockMachine:       "cannot lock machine",
	RCCannotFindMachine:       "cannot find machine",
	RCCannotCopyStateToRetain: "cannot copy state file to retain",
	RCRetainRootMissing:       "retain root directory does not exist",
	RCBackupRootMissing:       "backup root directory does not exist",
	RCCannotCreateDirectory:   "cannot create directory",
	RCCannotSaveXML:           "cannot save XML",
	RCCannotSaveBackendEntry:  "cannot save backend entry",
	RCCannotChownDirectory:    "cannot set directory ownership",
	RCCannotChmodDirectory:    "cannot set directory permission",
	RCNoConfig:                "cannot find configuration entry",
	RCBackendXMLInconsistent:  "backend/XML inconsistency",
	RCCannotCreateTarball:     "cannot create tarball",
	RCUnsupportedProtocol:     "unsupported file transfer protocol",
	RCUnknownBackend:          "unknown backend type",
	RCMissingFiles:            "missing necessary files",
	RCCorruptImage:            "corrupt disk image found",
	RCUnsupportedParameter:    "unsupported configuration parameter",
	RCCannotMoveImageBack:     "cannot move disk image to original location",
	RCCannotDefineMachine:     "cannot define machine",
	RCCannotStartMachine:      "cannot start machine",
	RCUndefinedObject:         "cannot work on undefined object",
	RCCannotReadState:         "cannot read state file",
	RCCannotReadXML:           "cannot read XML file",
	RCRetainNotEmpty:          "not all files deleted from retain location",
	RCNoSpace:                 "not enough disk space",
	RCNoSpaceInfo:             "no disk space information",
}

// String returns the original's English text for the code.
func (c ReturnCode) String() string {
	if s, ok := returnCodeText[c]; ok {
		return s
	}
	return "unknown return code " + strconv.Itoa(int(c))
}

// Known reports whether c is one of the codes the web UI knows.
func (c ReturnCode) Known() bool {
	_, ok := returnCodeText[c]
	return ok
}
