#!/usr/bin/env bash
# Builds the static release binary (glibc linked in, host names resolved in Rust) and
# prints its path on stdout:
#
#   binary="$(deploy/build-static.sh)"                # with the simulator: the .deb's binary
#   binary="$(deploy/build-static.sh --without-sim)"  # the container image's binary
#
# One static binary means the .deb runs on any glibc-based distribution release and
# behaves like the image. The image leaves the bundled provider simulator out (cargo
# `--no-default-features`: no `simulate`/`demo`); the .deb keeps it, since its
# booted-systemd test runs the package's own `convsync simulate`. deploy/docker/Dockerfile's
# builder stage runs the same cargo command as --without-sim. Each kind is copied to its own
# folder under a lock, so building both at once (the tests do) cannot hand one the other's
# binary. Needs Debian's libc6-dev (the static glibc).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
target="$(rustc -vV | sed -n 's/^host: //p')"
case "${1:-}" in
    "") kind=with-sim; features=(--features hickory-dns) ;;
    --without-sim) kind=without-sim; features=(--no-default-features --features hickory-dns) ;;
    *) echo "usage: $0 [--without-sim]" >&2; exit 2 ;;
esac
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
release="$target_dir/$target/release"
mkdir -p "$release/$kind"
echo "build-static: building a static convsync ($kind) for $target (release)" >&2
(
    flock 9
    cd "$repo"
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --locked --target "$target" "${features[@]}" --bin convsync >&2
    cp "$release/convsync" "$release/$kind/convsync.new"
    mv "$release/$kind/convsync.new" "$release/$kind/convsync"
) 9>"$target_dir/build-static.lock"
echo "$release/$kind/convsync"
