package ldapschema

import _ "embed" // for SchemaLDIF

// SchemaLDIF is the cn=config entry (cn=stoney-conductor,cn=schema,cn=config)
// defining the attribute types and object classes this package reads and
// writes, with the original stoney cloud OIDs and definitions. Load it after
// core, cosine, inetorgperson and nis. deploy/ldap/stoney-conductor-schema.ldif
// is the same file for operators.
//
//go:embed schema.ldif
var SchemaLDIF []byte
