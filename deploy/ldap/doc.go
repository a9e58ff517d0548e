// Package ldap holds no Go code: this directory is the OpenLDAP configuration
// stoney conductor ships for operators (README.md explains each file), and
// its tests prove that configuration on a real slapd.
//
// The tests start a slapd configured from the Debian package's own template,
// as a fresh `apt install slapd` leaves it, apply the LDIF files here with the
// very ldapmodify, ldapadd and ldappasswd commands the operator guide gives,
// and then check, bound as each daemon's account, what it may and may not do:
//
//	node kvm-01    writes the provisioning attributes of its own VMs' leaves,
//	               and writes back its own VMs on restore; nothing of kvm-02's
//	controld       adds and deletes leaves, writes every leaf's mode; no VM data
//	the web UI     still governed by the site's own rules after ours
//
// and that both daemons, bound that way, carry a backup through to finished
// and a retention delete through to the leaf's removal.
package ldap
