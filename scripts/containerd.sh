#!/usr/bin/env bash
# containerd.sh start|stop|status|socket - a private containerd for the archive tests.
#
# Runs Debian's containerd (1.6) with its own config: root, state, gRPC socket, pid file and log
# all live under $KILN_TEST_DIR/containerd (default /var/lib/kiln-test/containerd), so it never
# touches a system containerd on /run/containerd. The CRI plugin is loaded (it warns about the
# missing CNI config, and labels images in k8s.io as kubelet's would be); KILN_CONTAINERD_CRI=0
# disables it. `start` is idempotent and returns once `ctr version` answers on the
# socket; `socket` prints the socket path (what KILN_TEST_CONTAINERD wants).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { echo "usage: $0 start|stop|status|socket" >&2; exit 2; }
[ $# -eq 1 ] || usage
CMD=$1

DIR="$KILN_TEST_DIR/containerd"
PIDFILE="$DIR/containerd.pid"
LOG="$DIR/containerd.log"
CONFIG="$DIR/config.toml"
SOCK="$DIR/containerd.sock"

# True when containerd answers on our socket.
answers() { timeout 5 ctr --address "$SOCK" version >/dev/null 2>&1; }

# Our containerd's pid, if the pid file names a live containerd process.
our_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  [ -d "/proc/$pid" ] && grep -q containerd "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

write_config() {
  mkdir -p "$DIR/root" "$DIR/state"
  # The CRI plugin is what kubelet talks to; it labels the images it sees in k8s.io
  # (io.cri-containerd.image=managed), which the containerd export tests check. Without CNI
  # config it only warns. KILN_CONTAINERD_CRI=0 leaves it out.
  local DISABLED=''
  [ "${KILN_CONTAINERD_CRI:-1}" = 0 ] && DISABLED='"io.containerd.grpc.v1.cri"'
  cat > "$CONFIG" <<TOML
version = 2
root = "$DIR/root"
state = "$DIR/state"
disabled_plugins = [$DISABLED]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = "$SOCK.debug"
  level = "info"

[metrics]
  address = ""
TOML
}

start() {
  local pid
  if pid=$(our_pid) && answers; then
    say "containerd already running on $SOCK (pid $pid)"
    return 0
  fi
  if [ -n "${pid:-}" ]; then
    # Alive but deaf: a wedged instance would make every test hang; replace it.
    warn "containerd pid $pid does not answer on $SOCK: restarting it"
    stop
  fi
  command -v containerd >/dev/null || die "containerd is not installed (scripts/install-deps.sh)"
  command -v ctr >/dev/null || die "ctr is missing (it comes with the containerd package)"
  # sun_path holds 108 bytes, and the ttrpc socket adds ".ttrpc".
  [ ${#SOCK} -le 100 ] || die "socket path $SOCK is too long for a unix socket: use a shorter KILN_TEST_DIR"
  rm -f "$PIDFILE" "$SOCK" "$SOCK.ttrpc" "$SOCK.debug"
  write_config
  # setsid + nohup: containerd must outlive this script and its terminal.
  setsid nohup containerd --config "$CONFIG" >> "$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 100); do
    answers && { say "containerd running on $SOCK (pid $(cat "$PIDFILE"), log $LOG)"; return 0; }
    if ! our_pid >/dev/null; then
      tail -n 20 "$LOG" >&2 || true
      die "containerd exited during start-up (log: $LOG)"
    fi
    sleep 0.2
  done
  tail -n 20 "$LOG" >&2 || true
  die "containerd on $SOCK did not answer within 20s (log: $LOG)"
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    rm -f "$PIDFILE"
    say "containerd on $SOCK is not running (not started by this script)"
    return 0
  fi
  # SIGTERM: containerd closes its sockets; shims of leftover containers keep running on their
  # own, which is what containerd does too (the tests remove their containers).
  kill "$pid"
  for _ in $(seq 1 100); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE" "$SOCK" "$SOCK.ttrpc" "$SOCK.debug"
  say "containerd on $SOCK stopped (pid $pid)"
}

status() {
  local pid
  if pid=$(our_pid) && answers; then
    echo "running: $SOCK pid $pid, root $DIR/root"
  elif [ -n "${pid:-}" ]; then
    echo "not answering: $SOCK pid $pid (log $LOG)"
    return 1
  else
    echo "not running: $SOCK"
    return 1
  fi
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  socket) echo "$SOCK" ;;
  *) usage ;;
esac
