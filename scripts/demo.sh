#!/usr/bin/env bash
# demo.sh [--registry] - build and run the example image with kiln, offline and without a daemon.
#
#  1. installs the Debian packages kiln needs (scripts/install-deps.sh);
#  2. builds kiln (cargo build --release -p kiln);
#  3. makes the base image: a busybox rootfs tarball imported as busybox:latest
#     (with --registry: the test registry's localhost:5000/library/busybox:latest instead);
#  4. kiln build -t kiln-demo:latest examples/   and lists the image;
#  5. builds it again to an OCI tarball (all steps cached), unpacks it into a runtime bundle
#     (umoci, which turns the image config into the OCI runtime config) and runs it with runc.
#
# kiln keeps its images under its default root, or $KILN_ROOT / $KILN_STATE when set.
# Scratch files go to $KILN_DEMO_DIR (default /tmp/kiln-demo).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root "kiln runs builds with overlayfs and runc"

USE_REGISTRY=no
case "${1:-}" in
  --registry) USE_REGISTRY=yes ;;
  "") ;;
  *) echo "usage: $0 [--registry]" >&2; exit 2 ;;
esac
DEMO=${KILN_DEMO_DIR:-/tmp/kiln-demo}
mkdir -p "$DEMO"

say "1/5 dependencies"
"$REPO/scripts/install-deps.sh"

say "2/5 building kiln (release)"
(cd "$REPO" && cargo build --release -p kiln)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
KILN="$TARGET_DIR/release/kiln"
[ -x "$KILN" ] || die "no kiln binary at $KILN"
kiln() { echo "+ kiln $*"; "$KILN" "$@"; }

say "3/5 base image"
BUILD_ARGS=()
if [ "$USE_REGISTRY" = yes ]; then
  "$REPO/scripts/base-images.sh"
  BUILD_ARGS=(--build-arg BASE=localhost:5000/library/busybox:latest)
else
  "$REPO/scripts/busybox-rootfs.sh" "$DEMO/busybox-rootfs.tar"
  kiln import "$DEMO/busybox-rootfs.tar" busybox:latest
fi

say "4/5 kiln build (no daemon)"
kiln build --progress plain "${BUILD_ARGS[@]}" -t kiln-demo:latest "$REPO/examples"
kiln images

say "5/5 running the image with runc"
rm -rf "$DEMO/kiln-demo.oci.tar" "$DEMO/layout" "$DEMO/bundle"
kiln build --progress plain "${BUILD_ARGS[@]}" --output "type=oci,dest=$DEMO/kiln-demo.oci.tar" "$REPO/examples"
skopeo copy -q "oci-archive:$DEMO/kiln-demo.oci.tar" "oci:$DEMO/layout:kiln-demo"
umoci unpack --image "$DEMO/layout:kiln-demo" "$DEMO/bundle" >/dev/null
# umoci asks for a terminal; the demo runs without one.
python3 - "$DEMO/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
with open(path) as f:
    cfg = json.load(f)
cfg["process"]["terminal"] = False
print("  entrypoint+cmd:", cfg["process"]["args"], " user:", cfg["process"]["user"],
      " cwd:", cfg["process"]["cwd"])
with open(path, "w") as f:
    json.dump(cfg, f)
PY
ID="kiln-demo-$$"
echo "+ runc run $ID"
runc --root "$DEMO/runc" run -b "$DEMO/bundle" "$ID"
rm -rf "$DEMO/bundle" "$DEMO/layout"

say "demo done: kiln-demo:latest built by $KILN and run with runc"
echo "try: $KILN images; $KILN inspect kiln-demo:latest; $KILN history kiln-demo:latest"
