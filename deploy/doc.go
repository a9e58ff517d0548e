// Package deploy holds no Go code: this directory is what an operator
// installs (see docs/operator-guide.md):
//
//	install-deps.sh             Debian packages to build and run
//	controld.yaml               /etc/stoney-conductor/controld.yaml, every key explained
//	nodebackupd.yaml            /etc/stoney-conductor/nodebackupd.yaml, every key explained
//	systemd/*.service           the two daemons' units, restart policy and sandboxing
//	ldap/                       schema, syncprov, indexes, access rules, accounts
//
// Its tests build both daemons and start them on the example configurations,
// so an example that the daemons' strict YAML reading refuses (a key renamed
// or removed) fails the build instead of a first installation.
package deploy
