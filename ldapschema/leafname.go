package ldapschema

import "github.com/stoneycloud/stoney-conductor/fsm"

// IsLeafName reports whether s can name a backup leaf: a valid TimeLayout time.
func IsLeafName(s string) bool {
	_, err := fsm.ParseTime(s)
	return err == nil
}
