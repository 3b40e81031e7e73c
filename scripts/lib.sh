# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source it
# lib.sh - helpers sourced by the kiln scripts (not meant to be run on its own).
# Sets REPO (the checkout) and SHARED (the sibling shared/ dir, or $KILN_SHARED).

say() { printf '== %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "$(basename "$0") must run as root ($1)"
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# CI clones the repo next to shared/, so the shared dir is a sibling of the checkout.
SHARED=${KILN_SHARED:-$(dirname "$REPO")/shared}
# Where the test fixtures (registry storage, scratch roots) live.
KILN_TEST_DIR=${KILN_TEST_DIR:-/var/lib/kiln-test}
