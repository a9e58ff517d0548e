package format

import (
	"os/user"
	"strconv"
)

// LookupUser resolves the owner of a backup's files, a name or a number;
// "" is -1, which keeps the current owner.
func LookupUser(name string) (int, error) {
	return lookupID(name, user.Lookup, func(u *user.User) string { return u.Uid })
}

// LookupGroup resolves the group of a backup's files, as LookupUser.
func LookupGroup(name string) (int, error) {
	return lookupID(name, user.LookupGroup, func(g *user.Group) string { return g.Gid })
}

// LookupOwner resolves owner and group together, before anything is touched.
func LookupOwner(owner, group string) (uid, gid int, err error) {
	if uid, err = LookupUser(owner); err != nil {
		return -1, -1, err
	}
	if gid, err = LookupGroup(group); err != nil {
		return uid, -1, err
	}
	return uid, gid, nil
}

func lookupID[T any](name string, lookup func(string) (T, error), id func(T) string) (int, error) {
	if name == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	v, err := lookup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(id(v))
}
