#!/usr/bin/env bash
# busybox-rootfs.sh OUT.tar - an offline busybox root filesystem tarball.
#
# The same content as the conformance base image (shared/tools/make-base-images.sh):
# /bin/busybox from busybox-static with `busybox --install -s` applet links, /etc/passwd with
# root, nobody and appuser (1000:1000), /etc/group, /tmp 1777, /home/app owned by 1000, every
# timestamp pinned (SOURCE_DATE_EPOCH) so the tarball is byte-identical run after run.
# `kiln import OUT.tar busybox:latest` turns it into a local image without any registry.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root "chroot and chown"
umask 022
export LC_ALL=C

[ $# -eq 1 ] || { echo "usage: $0 OUT.tar" >&2; exit 2; }
OUT=$1
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}

if ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  say "installing busybox-static"
  DEBIAN_FRONTEND=noninteractive apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends busybox-static
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-busybox.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R="$WORK/rootfs"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,var,home/app}
cp /bin/busybox "$R/bin/busybox"
chmod 0755 "$R/bin/busybox"
# Inside a chroot, --install -s lays the links out in bin/sbin/usr/bin/usr/sbin as busybox wants.
chroot "$R" /bin/busybox --install -s
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nappuser:x:1000:1000:app:/home/app:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\nappuser:x:1000:\n' > "$R/etc/group"
chmod 0644 "$R/etc/passwd" "$R/etc/group"
chmod 1777 "$R/tmp"
chown -R 0:0 "$R"
chown 1000:1000 "$R/home/app"

# Entry names without a "./" prefix, sorted, numeric owners, pinned mtimes: reproducible.
mkdir -p "$(dirname "$OUT")"
(cd "$R" && tar --sort=name --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -cf - -- *) > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
say "wrote $OUT ($(tar -tf "$OUT" | wc -l) entries, sha256 $(sha256sum "$OUT" | cut -c1-16)...)"
