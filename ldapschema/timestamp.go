package ldapschema

import (
	"fmt"
	"time"
)

// TimeLayout is the form of backup leaf names (ou=20121002T010000Z) and of a
// done sstProvisioningState: ISO 8601 basic format, always UTC.
const TimeLayout = "20060102T150405Z"

// FormatTime renders t in UTC as TimeLayout. Sub-second parts are dropped.
func FormatTime(t time.Time) string {
	return t.UTC().Format(TimeLayout)
}

// ParseTime reads a TimeLayout value strictly: exactly 16 characters, digits
// where digits belong and a real calendar date. The result is in UTC.
func ParseTime(s string) (time.Time, error) {
	if len(s) != len(TimeLayout) {
		return time.Time{}, fmt.Errorf("%w: time %q is not of the form YYYYMMDDThhmmssZ", ErrMalformed, s)
	}
	for i := 0; i < len(s); i++ {
		c, l := s[i], TimeLayout[i]
		digit := l >= '0' && l <= '9'
		if digit && (c < '0' || c > '9') || !digit && c != l {
			return time.Time{}, fmt.Errorf("%w: time %q is not of the form YYYYMMDDThhmmssZ", ErrMalformed, s)
		}
	}
	t, err := time.Parse(TimeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: time %q: %v", ErrMalformed, s, err)
	}
	return t.UTC(), nil
}

// IsLeafName reports whether s can name a backup leaf: a valid TimeLayout time.
func IsLeafName(s string) bool {
	_, err := ParseTime(s)
	return err == nil
}
