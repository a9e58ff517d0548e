// Package web is stoney conductor's web UI: an overview of every VM's
// backups, a page per VM with "Back up now" and the restore sequence of the
// original web UI, and the schedule, rendered on the server with
// html/template and kept current by server-sent events from a directory
// watch.
//
// Everything a person sees or does goes through an LDAP connection bound as
// that person (their DN and password, checked by the bind at login), so the
// directory's access rules decide; the server holds no credential of its
// own. The workflow rules are controld/control's and fsm's: this package
// only calls them and shows their answers and refusals.
//
// `controld web` runs it (docs/web-ui.md).
package web
