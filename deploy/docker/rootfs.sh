#!/bin/sh
# Assembles the files of the convsync container image, for both builds of it:
# deploy/docker/Dockerfile runs it in its builder stage, deploy/docker/build-offline.sh
# on the host. Keeping the layout in one script is what keeps the two images identical.
#
#   rootfs.sh DEST CONVSYNC_BINARY CA_BUNDLE
#
# DEST/image/  becomes the image's /: the static binary, a CA bundle for TLS to the
#              providers, passwd/group entries for the unprivileged user 10001, and the
#              man pages and shell completions (deploy/usr-share.sh, beside this
#              script's directory);
# DEST/state/  becomes /var/lib/convsync, copied with the owner set to 10001 so that a
#              fresh named volume mounted there is writable by the service.
set -eu

if [ "$#" -ne 3 ]; then
    echo "usage: $0 DEST CONVSYNC_BINARY CA_BUNDLE" >&2
    exit 2
fi
dest=$1
binary=$2
ca_bundle=$3

rm -rf "$dest"
mkdir -p "$dest/image/usr/local/bin" "$dest/image/etc/ssl/certs" "$dest/image/etc/convsync" "$dest/state"
cp "$binary" "$dest/image/usr/local/bin/convsync"
chmod 0755 "$dest/image/usr/local/bin/convsync"
cp "$ca_bundle" "$dest/image/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$dest/image/etc/ssl/certs/ca-certificates.crt"
cat > "$dest/image/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
convsync:x:10001:10001:convsync:/var/lib/convsync:/sbin/nologin
PASSWD
cat > "$dest/image/etc/group" <<'GROUP'
root:x:0:
convsync:x:10001:
GROUP
chmod 0644 "$dest/image/etc/passwd" "$dest/image/etc/group"
chmod 0755 "$dest/image/etc/convsync"
"$(dirname "$0")/../usr-share.sh" "$dest/image" "$dest/image/usr/local/bin/convsync"
chmod 0700 "$dest/state"
