#!/usr/bin/env bash
# A Docker image of Debian's PostgreSQL that stands in for the official `postgres:16` in
# the tests of deploy/docker/compose.replicas.yaml and of two systemd hosts sharing one
# server (tests/it/deploy/). No image can be pulled here, so, as tests/systemd-image.sh
# does, the root filesystem is debootstrapped from the Debian mirror this machine's apt
# already uses, then imported. The tag is a hash of the release, the package list and
# this script (which holds the entry point): later runs find it and return at once.
#
#   tests/postgres-image.sh        # prints the image tag on stdout
#
# The entry point honours what the compose file uses of the official image's environment:
# POSTGRES_USER (default postgres), POSTGRES_DB (default: the user's name),
# POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD. On the first start it runs initdb into
# $PGDATA (the data volume) with scram-sha-256 for every TCP connection and trust on the
# container's own socket, listens on all addresses, drops to the postgres user and execs
# postgres, so the stop signal reaches the server itself. The stop signal is SIGINT, as in
# the official image: PostgreSQL's "fast" shutdown (SIGTERM would wait for every client).
#
# Needs Debian's debootstrap (.ci/install-packages) and a Docker engine.
set -euo pipefail

codename="$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")"
packages="postgresql"
key="$( { echo "$codename $packages"; cat "$0"; } | sha256sum | cut -c1-16)"
tag="convsync-postgres-test:$key"

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

# Tests running at the same time build it once: the others wait here, then find it.
exec 9>/var/tmp/convsync-postgres-image.lock
flock 9
if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

mirror="$("$(dirname "$0")/debian-mirror.sh")"

work="$(mktemp -d /var/tmp/convsync-postgres-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
echo "postgres-image: debootstrap $codename ($packages) for $tag" >&2
debootstrap --variant=minbase --include="$packages" "$codename" "$rootfs" "$mirror" >&2

# The package's postinst made a cluster of its own; the entry point makes the one it uses.
rm -rf "$rootfs"/etc/postgresql/* "$rootfs"/var/lib/postgresql/*
bindir="$(find "$rootfs/usr/lib/postgresql" -mindepth 2 -maxdepth 2 -name bin -type d | head -n 1)"
[[ -x "$bindir/postgres" ]] || { echo "postgres-image: no postgres binary in the rootfs" >&2; exit 1; }
bindir="${bindir#"$rootfs"}"

cat >"$rootfs/usr/local/bin/docker-entrypoint" <<'ENTRYPOINT'
#!/bin/sh
# The official image's environment, as far as convsync's compose file uses it.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /run/postgresql
    chown postgres:postgres "$PGDATA" /run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    user="${POSTGRES_USER:-postgres}"
    database="${POSTGRES_DB:-$user}"
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        password="$(cat "$POSTGRES_PASSWORD_FILE")"
    else
        password="${POSTGRES_PASSWORD:?POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE is required}"
    fi
    pwfile="$(mktemp)"
    printf '%s\n' "$password" >"$pwfile"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$database" != postgres ]; then
        pg_ctl --pgdata="$PGDATA" --wait --options="-c listen_addresses=''" start
        echo 'CREATE DATABASE :"db";' | psql --no-psqlrc --username="$user" \
            --dbname=postgres --set=ON_ERROR_STOP=1 --set=db="$database"
        pg_ctl --pgdata="$PGDATA" --wait --mode=fast stop
    fi
fi
exec "$@"
ENTRYPOINT
chmod 0755 "$rootfs/usr/local/bin/docker-entrypoint"

# `docker import --change` takes no STOPSIGNAL: a one-line build on the imported
# filesystem adds it (FROM a local image: nothing is pulled).
tar -C "$rootfs" -c . | docker import - "$tag-rootfs" >&2
docker build --pull=false --tag "$tag" - >&2 <<DOCKERFILE
FROM $tag-rootfs
ENV PATH=$bindir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV PGDATA=/var/lib/postgresql/data
ENTRYPOINT ["/usr/local/bin/docker-entrypoint"]
CMD ["postgres"]
STOPSIGNAL SIGINT
EXPOSE 5432
DOCKERFILE
docker image rm "$tag-rootfs" >/dev/null
echo "$tag"
