#!/usr/bin/env bash
# A Docker image of a minimal Debian whose PID 1 is systemd, for tests/it/deploy/systemd.rs.
# No image can be pulled here, so the root filesystem is debootstrapped from the Debian
# mirror this machine's apt already uses, then imported. The tag is a hash of the release,
# the package list and this script: later runs find it and return at once.
#
#   tests/systemd-image.sh        # prints the image tag on stdout
#
# Needs Debian's debootstrap (.ci/install-packages) and a Docker engine.
set -euo pipefail

codename="$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")"
# sudo: the documented commands run as written; dbus: systemctl's usual path;
# ca-certificates: a dependency of the package, present on practically every host;
# sqlite3: reading the mirror as docs/deploy.md shows.
packages="systemd,systemd-sysv,dbus,sudo,ca-certificates,sqlite3"
key="$( { echo "$codename $packages"; cat "$0"; } | sha256sum | cut -c1-16)"
tag="convsync-systemd-test:$key"

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

mirror="$("$(dirname "$0")/debian-mirror.sh")"

work="$(mktemp -d /var/tmp/convsync-systemd-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
echo "systemd-image: debootstrap $codename ($packages) for $tag" >&2
debootstrap --variant=minbase --include="$packages" "$codename" "$work/rootfs" "$mirror" >&2
# An empty machine-id: systemd makes one at boot, as on a freshly installed host.
rm -f "$work/rootfs/etc/machine-id"
touch "$work/rootfs/etc/machine-id"
tar -C "$work/rootfs" -c . | docker import - "$tag" >&2
echo "$tag"
