#!/usr/bin/env bash
# Installs the Debian packages stoney conductor needs to build, test and run its demo:
# OpenLDAP (slapd, ldap-utils), libvirt with the QEMU driver and headers for the cgo
# binding, QEMU in software emulation and qemu-img, and a Go toolchain when there is
# none new enough (Debian 12's own Go is too old: we take golang-1.23 from
# bookworm-backports, which fetches the go.mod's exact toolchain through the module
# proxy), and Debian's chromium, which the web UI's browser tests drive headless.
# Safe to run again.
set -euo pipefail

pkgs=(slapd ldap-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
      libvirt-dev qemu-system-x86 qemu-utils pkg-config gcc make util-linux e2fsprogs
      chromium)

# Go 1.21 or newer can switch to the toolchain go.mod asks for.
need_go=0
if ! command -v go >/dev/null 2>&1; then
	need_go=1
else
	minor=$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
	[ -n "$minor" ] && [ "$minor" -ge 21 ] || need_go=1
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -eq 0 ] && [ "$need_go" = 0 ]; then
	getent group vm-storage >/dev/null || $sudo groupadd --system vm-storage
	exit 0
fi

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
if [ "$need_go" = 1 ] && [ ! -x /usr/lib/go-1.23/bin/go ]; then
	echo "deb http://deb.debian.org/debian bookworm-backports main" |
		$sudo tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
	missing+=(golang-1.23-go)
fi
if [ ${#missing[@]} -gt 0 ]; then
	$sudo apt-get update -q
	$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The original layout gives disk images to root:vm-storage (the schema's default
# group); libvirt's QEMU runs as root here, so the group only has to exist.
if ! getent group vm-storage >/dev/null; then
	$sudo groupadd --system vm-storage
fi
