#!/usr/bin/env bash
# Builds the Debian package target/debian/convsync_<version>-1_<arch>.deb with cargo-deb
# (`cargo install cargo-deb`), from the same static binary as the container image:
#
#   deploy/debian/build-deb.sh [CARGO-DEB OPTIONS]      # e.g. --deb-version 0.1.0-2
#
# 1. builds the binary with deploy/build-static.sh, simulator included (the booted-systemd
#    test runs the package's own `convsync simulate`; CONVSYNC_SKIP_BUILD=1: use the one
#    already there);
# 2. generates its man pages and shell completions next to it (deploy/usr-share.sh);
# 3. runs `cargo deb --no-build`, which packs what [package.metadata.deb] in Cargo.toml
#    lists: the binary, the unit, /etc/convsync/convsync.toml as a conffile, the pages,
#    the completions and deploy/debian/{postinst,prerm,postrm}.
# Prints the path of the package on stdout.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
target="$(rustc -vV | sed -n 's/^host: //p')"
release="${CARGO_TARGET_DIR:-$repo/target}/$target/release"
if [[ "${CONVSYNC_SKIP_BUILD:-}" != 1 ]]; then
    "$repo/deploy/build-static.sh" >/dev/null
fi
binary="$release/with-sim/convsync"
[[ -x "$binary" ]] || { echo "build-deb: no binary at $binary" >&2; exit 1; }
if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: cargo-deb is missing: cargo install cargo-deb" >&2
    exit 1
fi

# Cargo.toml's assets name these under target/release/, which cargo-deb maps to the
# --target directory.
rm -rf "$release/deb-files"
"$repo/deploy/usr-share.sh" "$release/deb-files" "$binary"

cd "$repo"
cargo deb --no-build --target "$target" --output "${CARGO_TARGET_DIR:-$repo/target}/debian/" "$@" |
    tail -n 1
