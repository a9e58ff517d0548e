// Package docs holds no Go code: this directory is stoney conductor's
// documentation (architecture, operator guide, manual ldapmodify recipes,
// troubleshooting). Its tests apply the LDIF blocks of the documents, in the
// order they appear, to a real slapd, so that what the documents tell an
// operator to type is what the directory accepts.
package docs
