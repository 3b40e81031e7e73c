#!/usr/bin/env bash
# install-deps.sh [EXTRA_PACKAGE...] - install what kiln and its tests need (Debian 12, root).
#
# Idempotent: `apt-get update` runs only when a package is missing. Extra package names on the
# command line are installed too (bench/run.py uses this for docker.io and buildah).
# Also binds the hugetlb cgroup controller to cgroup v1 when the host runs the hybrid layout
# with hugetlb on the cgroup2 hierarchy: crun 1.8 refuses to run there otherwise
# (see shared/MACHINE.md). Safe to repeat; runc is unaffected.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root "apt-get and cgroup mounts"

# openssh-client: ssh-agent + ssh-add serve `kiln build --ssh ID=KEYFILE`; git: ADD of git repositories.
# systemd: systemd-analyze and systemd-socket-activate for the kilnd tests (never run as PID 1).
PKGS=(runc crun docker-registry skopeo umoci busybox-static curl apache2-utils openssl python3 git
  ca-certificates iproute2 time containerd protobuf-compiler openssh-client
  systemd "$@")

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "packages present: ${PKGS[*]}"
fi

# crun's hybrid-cgroup check: only when cgroup2 is mounted beside v1 and owns hugetlb.
fix_hugetlb() {
  local unified=/sys/fs/cgroup/unified
  [ -f "$unified/cgroup.controllers" ] || return 0
  grep -qw hugetlb "$unified/cgroup.controllers" || return 0
  if mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null; then return 0; fi
  say "binding the hugetlb cgroup controller to v1 (crun refuses hybrid mode otherwise)"
  mkdir -p /sys/fs/cgroup/hugetlb
  if ! mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb; then
    warn "could not mount the hugetlb v1 controller: crun may not work (runc will)"
  fi
}
fix_hugetlb

if ! command -v cargo >/dev/null 2>&1; then
  # Debian's rustc is older than the workspace's rust-version; rustup needs the internet.
  warn "cargo is not on PATH: install a Rust toolchain >= 1.80 (rustup) to build kiln"
fi
say "dependencies ready"
