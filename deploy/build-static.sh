#!/usr/bin/env bash
# Builds the static release binary that both the container image and the Debian package
# ship (glibc linked in, host names resolved in Rust), and prints its path on stdout:
#
#   binary="$(deploy/build-static.sh)"
#
# One binary for both means the .deb runs on any glibc-based distribution release and
# behaves exactly like the image. deploy/docker/Dockerfile's builder stage runs the same
# cargo command. Needs Debian's libc6-dev (the static glibc).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
target="$(rustc -vV | sed -n 's/^host: //p')"
echo "build-static: building a static convsync for $target (release)" >&2
(cd "$repo" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" --features hickory-dns --bin convsync) >&2
echo "${CARGO_TARGET_DIR:-$repo/target}/$target/release/convsync"
