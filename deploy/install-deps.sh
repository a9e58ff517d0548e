#!/usr/bin/env bash
# Installs the Debian packages stoney conductor needs to build, test and run its demo:
# OpenLDAP (slapd, ldap-utils), libvirt with the QEMU driver and headers for the cgo
# binding, QEMU in software emulation and qemu-img. Safe to run again.
set -euo pipefail

pkgs=(slapd ldap-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
      libvirt-dev qemu-system-x86 qemu-utils pkg-config gcc make util-linux e2fsprogs)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# slapd's postinst must not start a system-wide server or ask questions: we run our own.
echo "slapd slapd/no_configuration boolean true" | $sudo debconf-set-selections
# Keep Debian's service scripts from starting daemons while installing.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
	$sudo chmod 755 "$policy"
	created_policy=1
fi
trap '[ "$created_policy" = 1 ] && $sudo rm -f "$policy"' EXIT
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
