#!/bin/sh
# Prints the URL for the image label org.opencontainers.image.source, or nothing when
# there is no honest value (the label is then left off, never set to a placeholder):
#
#   deploy/docker/oci-source.sh [REPO_DIR]      # default: this checkout
#
# 1. the `repository` key of REPO_DIR/Cargo.toml's [package] section;
# 2. else the git remote `origin` of REPO_DIR, when it is an https URL (any user name or
#    token in it is dropped: labels are public, and an ssh or file remote is no address
#    anyone else can fetch from);
# 3. else nothing.
# deploy/docker/build-offline.sh uses it unless CONVSYNC_SOURCE is set.
set -eu

repo=${1:-$(cd "$(dirname "$0")/../.." && pwd)}

url=$(awk '
    /^[[:space:]]*\[/ { in_package = ($0 ~ /^[[:space:]]*\[package\][[:space:]]*$/) }
    in_package && /^[[:space:]]*repository[[:space:]]*=[[:space:]]*"/ {
        sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit
    }' "$repo/Cargo.toml")
if [ -z "$url" ]; then
    origin=$(git -C "$repo" remote get-url origin 2>/dev/null || true)
    case "$origin" in
        https://*) url=$(printf '%s\n' "$origin" | sed -E 's#^https://[^/@]*@#https://#') ;;
    esac
fi
if [ -n "$url" ]; then
    printf '%s\n' "$url"
fi
