package ldapschema

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestSchemaShippedCopyIsIdentical(t *testing.T) {
	shipped, err := os.ReadFile("../deploy/ldap/stoney-conductor-schema.ldif")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shipped, SchemaLDIF) {
		t.Fatal("deploy/ldap/stoney-conductor-schema.ldif differs from ldapschema/schema.ldif: copy one over the other")
	}
}

// schemaDefinitions returns the attribute type and object class definitions of
// SchemaLDIF by NAME, as read with our own LDIF parser.
func schemaDefinitions(t *testing.T) (attrs, classes map[string]string) {
	t.Helper()
	entries, err := ParseLDIF(string(SchemaLDIF))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].DN != "cn=stoney-conductor,cn=schema,cn=config" {
		t.Fatalf("SchemaLDIF must hold exactly cn=stoney-conductor,cn=schema,cn=config, has %d entries", len(entries))
	}
	e := entries[0]
	if !containsFold(entryValues(e, "objectClass"), "olcSchemaConfig") {
		t.Fatal("schema entry is not an olcSchemaConfig")
	}
	name := regexp.MustCompile(`NAME '([^']+)'`)
	attrs, classes = map[string]string{}, map[string]string{}
	oids := map[string]string{}
	for _, set := range []struct {
		attr string
		into map[string]string
	}{{"olcAttributeTypes", attrs}, {"olcObjectClasses", classes}} {
		for _, def := range entryValues(e, set.attr) {
			m := name.FindStringSubmatch(def)
			if m == nil {
				t.Fatalf("definition without NAME: %s", def)
			}
			if _, dup := set.into[strings.ToLower(m[1])]; dup {
				t.Errorf("%s defined twice", m[1])
			}
			set.into[strings.ToLower(m[1])] = def
			oid := strings.Fields(strings.TrimPrefix(def, "("))[0]
			if other, dup := oids[oid]; dup {
				t.Errorf("OID %s used by %s and %s", oid, other, m[1])
			}
			oids[oid] = m[1]
		}
	}
	return attrs, classes
}

func TestSchemaDefinesWhatWeUse(t *testing.T) {
	attrs, classes := schemaDefinitions(t)
	for _, a := range []string{
		AttrMode, AttrState, AttrExecutionDate, AttrReturnValue, AttrExecutionTime,
		AttrNode, AttrVirtualMachine, AttrVirtualMachinePool, AttrVirtualMachinePoolType, AttrVirtualMachineType,
		AttrVirtualMachineSubType, AttrDisplayName, AttrMemory, AttrVCPU, AttrStatus, AttrType, AttrClockOffset,
		AttrOnCrash, AttrOnPowerOff, AttrOnReboot, AttrOSArchitecture, AttrOSBootDevice, AttrOSMachine, AttrOSType,
		AttrMigrationNode, AttrDisk, AttrDevice, AttrSourceFile, AttrTargetBus, AttrDriverName, AttrDriverType,
		AttrReadonly, AttrCronMinute, AttrCronHour, AttrCronDay, AttrCronMonth, AttrCronDayOfWeek, AttrCronActive,
		AttrCronCommand, AttrBackupRootDirectory, AttrBackupRetainDirectory, AttrBackupRamDiskLocation,
		AttrRestoreVMWithoutState, AttrBackupExcludeFromBackup, AttrBackupNumberOfIterations, AttrBandwidthMerge,
		AttrForceStart, AttrSequenceStop, AttrSequenceStart, AttrDiskImagePermission, AttrDiskImageFormat,
		AttrDiskImageOwner, AttrDiskImageGroup, AttrDiskImageDirectoryOwner, AttrDiskImageDirectoryGroup,
		AttrDiskImageDirectoryPermission,
	} {
		if _, ok := attrs[strings.ToLower(a)]; !ok {
			t.Errorf("attribute %s is not defined in SchemaLDIF", a)
		}
	}
	for _, c := range []string{ClassProvisioning, ClassCron, ClassBackup, ClassVirtualMachine, ClassDisk, ClassPool} {
		if _, ok := classes[strings.ToLower(c)]; !ok {
			t.Errorf("object class %s is not defined in SchemaLDIF", c)
		}
	}
}

func TestSchemaClosure(t *testing.T) {
	attrs, classes := schemaDefinitions(t)
	fromCore := map[string]bool{"description": true, "uid": true}
	list := regexp.MustCompile(`\b(MUST|MAY) (\([^)]*\)|\S+)`)
	for name, def := range classes {
		for _, m := range list.FindAllStringSubmatch(def, -1) {
			for _, a := range strings.FieldsFunc(m[2], func(r rune) bool { return strings.ContainsRune("()$ ", r) }) {
				if _, ok := attrs[strings.ToLower(a)]; !ok && !fromCore[strings.ToLower(a)] {
					t.Errorf("class %s uses %s, which is neither defined here nor in core", name, a)
				}
			}
		}
	}
	// Each attribute is used by some class: the schema carries nothing else.
	for name := range attrs {
		used := false
		for _, def := range classes {
			if regexp.MustCompile(`(?i)[( $]` + name + `[ )$]`).MatchString(def) {
				used = true
			}
		}
		if !used {
			t.Errorf("attribute %s is not used by any class", name)
		}
	}
}
