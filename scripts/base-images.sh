#!/usr/bin/env bash
# base-images.sh - make sure localhost:5000/library/busybox:latest exists.
#
# Starts the test registry on 127.0.0.1:5000 (scripts/registry.sh) and runs the shared
# shared/tools/make-base-images.sh, which builds the pinned busybox image and pushes it
# (idempotent: same digest every time, the push is skipped when the registry has it).
# The shared dir is the sibling ../shared of the checkout, or $KILN_SHARED.
# For an offline base without any registry see scripts/busybox-rootfs.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root "make-base-images.sh needs chroot and chown"

PORT=5000
MAKE="$SHARED/tools/make-base-images.sh"
[ -x "$MAKE" ] || [ -f "$MAKE" ] || die "$MAKE not found: set KILN_SHARED to the shared/ directory"

"$REPO/scripts/registry.sh" start "$PORT"
REGISTRY="127.0.0.1:$PORT" PUSH=yes bash "$MAKE"

# Check the way the tests will pull it: by manifest, over plain HTTP, on localhost.
code=$(curl -s -o /dev/null -w '%{http_code}' \
  -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
  "http://localhost:$PORT/v2/library/busybox/manifests/latest")
[ "$code" = 200 ] || die "localhost:$PORT/library/busybox:latest is not in the registry (HTTP $code)"
say "base image ready: localhost:$PORT/library/busybox:latest"
