#!/usr/bin/env bash
# Checks deploy/systemd/convsync.service offline, without systemd running as PID 1:
#   1. `systemd-analyze verify` reports nothing (unknown keys, bad values, missing
#      executables are all failures, not warnings);
#   2. `systemd-analyze security` rates the exposure "OK" or better.
# The unit's /usr/bin/convsync is pointed at a freshly built binary for the check.
# Needs Debian's `systemd` package (systemd-analyze); CI installs it.
#
#   deploy/systemd/check.sh [PATH-TO-CONVSYNC-BINARY]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
unit="$here/convsync.service"

if ! command -v systemd-analyze >/dev/null; then
    echo "check.sh: systemd-analyze not found: apt-get install systemd" >&2
    exit 2
fi

binary="${1:-}"
if [[ -z "$binary" ]]; then
    (cd "$repo" && cargo build --quiet --bin convsync)
    binary="${CARGO_TARGET_DIR:-$repo/target}/debug/convsync"
fi
[[ -x "$binary" ]] || { echo "check.sh: $binary is not an executable" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Same unit, same name (security ratings and messages refer to it), local binary.
sed "s#/usr/bin/convsync#${binary}#g" "$unit" > "$work/convsync.service"

echo "== systemd-analyze verify convsync.service"
# verify exits 0 on some warnings; any output at all is treated as a failure.
if ! output="$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$work/convsync.service" 2>&1)" || [[ -n "$output" ]]; then
    printf '%s\n' "$output" >&2
    echo "check.sh: systemd-analyze verify found problems" >&2
    exit 1
fi
echo "OK: no findings"

echo "== systemd-analyze security convsync.service"
security="$(SYSTEMD_LOG_COLOR=0 systemd-analyze security --offline=true --no-pager "$work/convsync.service" 2>&1)" || {
    printf '%s\n' "$security" >&2
    echo "check.sh: systemd-analyze security failed" >&2
    exit 1
}
verdict="$(printf '%s\n' "$security" | grep 'Overall exposure level' || true)"
printf '%s\n' "$security" | grep -v '^✓' || true
case "$verdict" in
    *" OK"* | *" SAFE"* | *" PERFECT"*) echo "OK: ${verdict#*: }" ;;
    *)
        echo "check.sh: exposure must be rated OK or better, got: ${verdict:-no rating}" >&2
        exit 1
        ;;
esac
