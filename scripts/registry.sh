#!/usr/bin/env bash
# registry.sh start|stop|status [PORT] - a throwaway plain-HTTP registry for tests.
#
# Runs Debian's `docker-registry` (distribution 2.8) on 127.0.0.1:PORT (default 5000) with its own
# config, storage, pid file and log under $KILN_TEST_DIR/registry-PORT (default
# /var/lib/kiln-test/registry-PORT). The packaged /etc/docker/registry/config.yml is not used: it
# listens on all interfaces and wants htpasswd auth. `start` is idempotent and returns once
# /v2/ answers; a registry that someone else started on that port is reused if it answers 200.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { echo "usage: $0 start|stop|status [PORT]" >&2; exit 2; }
[ $# -ge 1 ] || usage
CMD=$1
PORT=${2:-5000}
case "$PORT" in ''|*[!0-9]*) usage ;; esac

DIR="$KILN_TEST_DIR/registry-$PORT"
PIDFILE="$DIR/registry.pid"
LOG="$DIR/registry.log"
CONFIG="$DIR/config.yml"
URL="http://127.0.0.1:$PORT/v2/"

# Prints the HTTP status of /v2/ ("000" when nothing answers).
v2_status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$URL" 2>/dev/null || true; }

# Our registry's pid, if the pid file names a live docker-registry process.
our_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  [ -d "/proc/$pid" ] && grep -q docker-registry "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

write_config() {
  mkdir -p "$DIR/storage"
  cat > "$CONFIG" <<YAML
version: 0.1
log:
  level: info
  fields:
    service: kiln-test-registry
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$PORT
  headers:
    X-Content-Type-Options: [nosniff]
YAML
}

start() {
  local pid code
  if pid=$(our_pid); then
    say "registry already running on 127.0.0.1:$PORT (pid $pid)"
    return 0
  fi
  code=$(v2_status)
  if [ "$code" = 200 ]; then
    say "a registry not started by this script already answers on 127.0.0.1:$PORT: using it"
    return 0
  elif [ "$code" != 000 ]; then
    die "port $PORT is taken by something answering $code on /v2/ (the packaged docker-registry service with auth?); stop it or pick another port"
  fi
  command -v docker-registry >/dev/null || die "docker-registry is not installed (scripts/install-deps.sh)"
  rm -f "$PIDFILE"
  write_config
  # setsid + nohup: the registry must outlive this script and its terminal.
  setsid nohup docker-registry serve "$CONFIG" >> "$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 100); do
    [ "$(v2_status)" = 200 ] && { say "registry running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), log $LOG)"; return 0; }
    if ! our_pid >/dev/null; then
      tail -n 20 "$LOG" >&2 || true
      die "docker-registry exited during start-up (log: $LOG)"
    fi
    sleep 0.2
  done
  tail -n 20 "$LOG" >&2 || true
  die "registry on 127.0.0.1:$PORT did not answer within 20s (log: $LOG)"
}

stop() {
  local pid
  if ! pid=$(our_pid); then
    rm -f "$PIDFILE"
    say "registry on port $PORT is not running (not started by this script)"
    return 0
  fi
  kill "$pid"
  for _ in $(seq 1 50); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  say "registry on port $PORT stopped (pid $pid)"
}

status() {
  local pid
  if pid=$(our_pid); then
    echo "running: 127.0.0.1:$PORT pid $pid, /v2/ -> $(v2_status), storage $DIR/storage"
  elif [ "$(v2_status)" = 200 ]; then
    echo "running: 127.0.0.1:$PORT (not started by this script)"
  else
    echo "not running: 127.0.0.1:$PORT"
    return 1
  fi
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
