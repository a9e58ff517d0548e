package ldapschema

import (
	"encoding/base64"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// ldifWidth is where FormatLDIF folds lines (RFC 2849 recommends 76 columns).
const ldifWidth = 76

// FormatLDIF renders entries as LDIF content records (RFC 2849), the form a
// VM's subtree is saved in (<vm>.ldif) and that ldapadd and slapadd read.
// Entries come parents first, children right after their parent, so the file
// can be added in order; a value that is not plain ASCII text (non-ASCII,
// control characters, leading space, colon or '<', trailing space) is written
// base64-encoded with "::"; lines are folded at 76 columns. There is no
// "version: 1" line, which slapadd would refuse.
func FormatLDIF(entries []*ldap.Entry) string {
	sorted := make([]*ldap.Entry, 0, len(entries))
	keys := make(map[*ldap.Entry][]string, len(entries))
	for _, e := range entries {
		if e == nil {
			continue
		}
		sorted = append(sorted, e)
		keys[e] = treeKey(e.DN)
	}
	sort.SliceStable(sorted, func(i, j int) bool {
		return slices.Compare(keys[sorted[i]], keys[sorted[j]]) < 0
	})

	// No "version: 1" line: slapadd refuses it, ldapadd does without it.
	var b strings.Builder
	for i, e := range sorted {
		if i > 0 {
			b.WriteByte('\n')
		}
		writeLDIFLine(&b, "dn", e.DN)
		for _, a := range e.Attributes {
			for _, v := range attrStrings(a) {
				writeLDIFLine(&b, a.Name, v)
			}
		}
	}
	return b.String()
}

// treeKey orders DNs so that a parent sorts before its subtree: the RDNs from
// the root down, normalized.
func treeKey(dn string) []string {
	parsed, err := ldap.ParseDN(dn)
	if err != nil || len(parsed.RDNs) == 0 {
		return []string{strings.ToLower(dn)}
	}
	key := make([]string, len(parsed.RDNs))
	for i, rdn := range parsed.RDNs {
		key[len(key)-1-i] = strings.ToLower(rdn.String())
	}
	return key
}

func writeLDIFLine(b *strings.Builder, name, value string) {
	var line string
	if ldifSafe(value) {
		line = name + ": " + value
		if value == "" {
			line = name + ":"
		}
	} else {
		line = name + ":: " + base64.StdEncoding.EncodeToString([]byte(value))
	}
	// Only ASCII reaches here (anything else is base64), so byte offsets are
	// character offsets and folding never splits a character.
	for first := true; ; first = false {
		width := ldifWidth
		if !first {
			b.WriteByte(' ')
			width--
		}
		if len(line) <= width {
			b.WriteString(line)
			b.WriteByte('\n')
			return
		}
		b.WriteString(line[:width])
		b.WriteByte('\n')
		line = line[width:]
	}
}

// ldifSafe reports whether v can be written as a SAFE-STRING (RFC 2849).
func ldifSafe(v string) bool {
	if v == "" {
		return true
	}
	switch v[0] {
	case ' ', ':', '<':
		return false
	}
	if v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		// Printable ASCII only: RFC 2849 would allow other control characters,
		// but tools and editors mangle them.
		if c := v[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// ParseLDIF reads LDIF content records (RFC 2849): an optional "version: 1",
// then entries separated by blank lines, each a "dn:" line followed by
// attribute lines. It understands folded lines, "::" base64 values and "#"
// comments (folded ones too) and accepts LF or CRLF line ends. Change records
// and "<" URL values are refused. Errors wrap ErrMalformed and name the line.
func ParseLDIF(text string) ([]*ldap.Entry, error) {
	type logical struct {
		no   int // line number where it starts
		text string
	}
	// Unfold into logical lines; an empty logical line ends a record.
	var lines []logical
	inComment := false
	for i, raw := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		no := i + 1
		switch {
		case strings.HasPrefix(raw, " "):
			if inComment {
				continue
			}
			if len(lines) == 0 || lines[len(lines)-1].text == "" {
				return nil, fmt.Errorf("%w: LDIF line %d: continuation line without a line to continue", ErrMalformed, no)
			}
			lines[len(lines)-1].text += raw[1:]
		case strings.HasPrefix(raw, "#"):
			inComment = true
		default:
			inComment = false
			lines = append(lines, logical{no, raw})
		}
	}

	var entries []*ldap.Entry
	var cur *ldap.Entry
	first := true
	for _, l := range lines {
		if l.text == "" {
			cur = nil
			continue
		}
		name, value, err := parseLDIFLine(l.text)
		if err != nil {
			return nil, fmt.Errorf("%w: LDIF line %d: %v", ErrMalformed, l.no, err)
		}
		if first && cur == nil && strings.EqualFold(name, "version") {
			first = false
			if value != "1" {
				return nil, fmt.Errorf("%w: LDIF line %d: unsupported version %q", ErrMalformed, l.no, value)
			}
			continue
		}
		first = false
		if cur == nil {
			if !strings.EqualFold(name, "dn") {
				return nil, fmt.Errorf("%w: LDIF line %d: record starts with %q, not dn", ErrMalformed, l.no, name)
			}
			cur = &ldap.Entry{DN: value}
			entries = append(entries, cur)
			continue
		}
		switch strings.ToLower(name) {
		case "changetype", "control":
			return nil, fmt.Errorf("%w: LDIF line %d: %s: only content records are supported", ErrMalformed, l.no, name)
		case "dn":
			return nil, fmt.Errorf("%w: LDIF line %d: second dn in one record (missing blank line?)", ErrMalformed, l.no)
		}
		addLDIFValue(cur, name, value)
	}
	return entries, nil
}

// parseLDIFLine splits "name: value", "name:: base64" or "name:".
func parseLDIFLine(line string) (name, value string, err error) {
	i := strings.IndexByte(line, ':')
	if i <= 0 {
		return "", "", fmt.Errorf("no attribute name and colon in %q", truncate(line))
	}
	name, rest := line[:i], line[i+1:]
	if strings.ContainsAny(name, " \t") {
		return "", "", fmt.Errorf("invalid attribute name %q", name)
	}
	switch {
	case strings.HasPrefix(rest, ":"):
		enc := strings.TrimLeft(rest[1:], " ")
		dec, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return "", "", fmt.Errorf("%s: bad base64 value: %v", name, err)
		}
		return name, string(dec), nil
	case strings.HasPrefix(rest, "<"):
		return "", "", fmt.Errorf("%s: URL values are not supported", name)
	}
	return name, strings.TrimLeft(rest, " "), nil
}

func addLDIFValue(e *ldap.Entry, name, value string) {
	for _, a := range e.Attributes {
		if strings.EqualFold(a.Name, name) {
			a.Values = append(a.Values, value)
			a.ByteValues = append(a.ByteValues, []byte(value))
			return
		}
	}
	e.Attributes = append(e.Attributes, ldap.NewEntryAttribute(name, []string{value}))
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
