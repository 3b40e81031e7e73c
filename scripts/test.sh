#!/usr/bin/env bash
# test.sh [--conformance-only] [--no-deps] - everything CI checks, in order:
#
#  1. Debian packages (scripts/install-deps.sh);
#  2. the test registry on localhost:5000 with the busybox base image (scripts/base-images.sh),
#     and a private containerd for the archive tests (scripts/containerd.sh);
#  3. cargo build --workspace (dev profile);
#  4. cargo test --workspace, with KILN_BIN (the kiln binary just built) and
#     KILN_TEST_REGISTRY=localhost:5000 and KILN_TEST_CONTAINERD (its socket) exported for the
#     integration tests;
#  5. the BuildKit conformance suite (shared/tools/conformance-run --builder kiln) with a fresh
#     kiln root; every case listed in tests/conformance-scope.txt must pass, the others are
#     reported only.
# Ends with one summary line, `test.sh: PASS ...` or `test.sh: FAIL ...`, and exits non-zero on
# any failure. A registry this script started is stopped again (KILN_KEEP_REGISTRY=1 keeps it),
# and so is a containerd (KILN_KEEP_CONTAINERD=1 keeps it);
# the scratch dir (kiln root of the conformance run) is deleted unless KEEP_WORK=yes.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root "kiln's tests mount overlayfs and run runc"

RUN_CARGO_TEST=yes
RUN_DEPS=yes
for a in "$@"; do
  case "$a" in
    --conformance-only) RUN_CARGO_TEST=no ;;
    --no-deps) RUN_DEPS=no ;;
    *) echo "usage: $0 [--conformance-only] [--no-deps]" >&2; exit 2 ;;
  esac
done

SCOPE="$REPO/tests/conformance-scope.txt"
CASES="$SHARED/conformance/cases"
RUNNER="$SHARED/tools/conformance-run"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
export KILN_BIN="$TARGET_DIR/debug/kiln"
export KILN_TEST_REGISTRY=localhost:5000
export KILN_SHARED="$SHARED"
export KILN_TEST_DIR  # the e2e tests put their scratch dirs there too
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

mkdir -p "$KILN_TEST_DIR"
WORK=$(mktemp -d "$KILN_TEST_DIR/test.XXXXXX")
results=()
failed=no
registry_started=no
containerd_started=no
T0=$(date +%s)

note() { results+=("$1"); }
fail() { results+=("$1"); failed=yes; }

# Unmount whatever a crashed kiln left under the scratch dir before deleting it, so rm can
# never reach through a bind mount into the context or the host.
cleanup() {
  if [ "$registry_started" = yes ] && [ "${KILN_KEEP_REGISTRY:-0}" != 1 ]; then
    "$REPO/scripts/registry.sh" stop 5000 >/dev/null || true
  fi
  if [ "$containerd_started" = yes ] && [ "${KILN_KEEP_CONTAINERD:-0}" != 1 ]; then
    "$REPO/scripts/containerd.sh" stop >/dev/null || true
  fi
  awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo \
    | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-no}" = yes ]; then
    echo "kept $WORK"
  else
    rm -rf --one-file-system "$WORK"
  fi
}
trap cleanup EXIT

# Runs "$@" as stage $1 (a label), timing it.
stage() {
  local label=$1 t rc
  shift
  say "$label: $*"
  t=$(date +%s)
  "$@"
  rc=$?
  say "$label: $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)") in $(( $(date +%s) - t ))s"
  return $rc
}

finish() {
  local line
  echo
  say "summary ($(( $(date +%s) - T0 ))s)"
  for line in "${results[@]}"; do echo "  $line"; done
  local joined
  joined=$(printf '%s; ' "${results[@]}")
  joined=${joined%; }
  if [ "$failed" = yes ]; then
    echo "test.sh: FAIL ($joined)"
    exit 1
  fi
  echo "test.sh: PASS ($joined)"
  # The plain closing line CI readers look for (the conformance cases that must pass).
  echo "conformance: ${scope_pass:-0} passed, 0 failed"
  exit 0
}

# ---------------------------------------------------------------- 1-2. fixtures
if [ "$RUN_DEPS" = yes ]; then
  stage deps "$REPO/scripts/install-deps.sh" || { fail "deps: FAILED"; finish; }
fi
"$REPO/scripts/registry.sh" status 5000 >/dev/null 2>&1 || registry_started=yes
stage base-images "$REPO/scripts/base-images.sh" || { fail "base image: FAILED"; finish; }
"$REPO/scripts/containerd.sh" status >/dev/null 2>&1 || containerd_started=yes
stage containerd "$REPO/scripts/containerd.sh" start || { fail "containerd: FAILED"; finish; }
KILN_TEST_CONTAINERD=$("$REPO/scripts/containerd.sh" socket)
export KILN_TEST_CONTAINERD

# ---------------------------------------------------------------- 3-4. cargo
cd "$REPO" || die "cannot cd to $REPO"
command -v cargo >/dev/null || { fail "cargo: not installed"; finish; }
stage build cargo build --workspace || { fail "cargo build: FAILED"; finish; }
[ -x "$KILN_BIN" ] || { fail "cargo build: no kiln binary at $KILN_BIN"; finish; }
note "cargo build: ok"
if [ "$RUN_CARGO_TEST" = yes ]; then
  if stage test cargo test --workspace; then note "cargo test: ok"; else fail "cargo test: FAILED"; fi
fi

# ---------------------------------------------------------------- 5. conformance
[ -f "$SCOPE" ] || { fail "conformance: $SCOPE missing"; finish; }
[ -d "$CASES" ] || { fail "conformance: no cases at $CASES (set KILN_SHARED)"; finish; }
mapfile -t in_scope < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$SCOPE" | grep -v '^$')
for c in "${in_scope[@]}"; do
  [ -d "$CASES/$c" ] || { fail "conformance: scope names unknown case $c"; finish; }
done

ARTIFACTS="$KILN_TEST_DIR/conformance-artifacts"
rm -rf "$ARTIFACTS"
mkdir -p "$ARTIFACTS"
LOG="$WORK/conformance.log"
# A fresh root and state per run: nothing is cached across runs.
export KILN="$KILN_BIN --root $WORK/root --state $WORK/state"
stage conformance python3 "$RUNNER" --builder kiln --timeout 300 --artifacts "$ARTIFACTS" 2>&1 | tee "$LOG"

scope_pass=0 scope_fail=() other_pass=0 other_total=0
for c in "${in_scope[@]}"; do
  if grep -qx "PASS $c\( (.*)\)\?" "$LOG"; then
    scope_pass=$((scope_pass + 1))
  else
    scope_fail+=("$c")
  fi
done
while read -r verdict name; do
  name=${name%%:*}
  name=${name%% *}
  case " ${in_scope[*]} " in *" $name "*) continue ;; esac
  other_total=$((other_total + 1))
  [ "$verdict" = PASS ] && other_pass=$((other_pass + 1))
done < <(grep -E '^(PASS|FAIL) ' "$LOG")

echo
say "conformance: in scope $scope_pass/${#in_scope[@]} passed; not yet in scope $other_pass/$other_total passed"
if [ ${#scope_fail[@]} -gt 0 ]; then
  echo "  in-scope failures: ${scope_fail[*]}"
  echo "  build logs, dumps and diffs: $ARTIFACTS"
  fail "conformance: ${#scope_fail[@]} of ${#in_scope[@]} in-scope cases FAILED"
else
  note "conformance: ${scope_pass}/${#in_scope[@]} in scope (+${other_pass}/${other_total} others)"
fi
finish
