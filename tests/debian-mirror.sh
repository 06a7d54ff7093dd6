#!/usr/bin/env bash
# The Debian archive this machine's apt already uses: the first non-security archive in
# apt's sources (one-line or deb822 format), for the test images that tests/*-image.sh
# debootstrap from it (no image can be pulled here).
#
#   tests/debian-mirror.sh        # prints the archive's URL on stdout
set -euo pipefail
mirror="$( {
    grep -hsE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
        sed -E 's/\[[^]]*\]//' | awk '{print $2}'
    grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
} | grep -v security | head -n 1)"
[[ -n "$mirror" ]] || { echo "debian-mirror: no Debian archive in apt's sources" >&2; exit 1; }
echo "$mirror"
