#!/usr/bin/env bash
# The load-balanced topology on loopback, without Docker: a private redis-server, the
# sandbox WeChat API, three wx-jssdk instances sharing that Redis, and nginx
# round-robin in front of them (deploy/nginx.conf).
#
#   deploy/local-stack.sh up       start everything; wait (bounded) until each piece answers
#   deploy/local-stack.sh down     stop what `up` started, and nothing else
#   deploy/local-stack.sh status   what runs and whether it answers (exit 0: all of it)
#   deploy/local-stack.sh restart PIECE   SIGTERM one piece (redis or instance-1..3), start
#                                  it again with the same settings, wait until it answers
#                                  (redis comes back empty: it has no persistence)
#
# Settings, from the environment:
#   STACK_DIR       state dir: configs, pid files, logs       (default /tmp/wx-jssdk-stack)
#   WXJSSDK_BIN     the binary             (default target/release/wx-jssdk, built if missing)
#   STACK_PORT      nginx, the entry point                    (default 8088)
#   REDIS_PORT      the private redis-server                  (default 16379)
#   SANDBOX_PORT    the sandbox WeChat API                    (default 18090)
#   INSTANCE_PORTS  3 ports, space or comma separated         (default "18081 18082 18083")
#   EXPIRES_IN      expires_in of the sandbox's tokens and tickets, seconds (default 7200)
#   STACK_APPID, STACK_SECRET, STACK_TOKEN   credentials of the app `default`
#   WAIT_SECS       bound on the wait for each piece          (default 30)
#   RUST_LOG        log filter of the instances and the sandbox (default info: a line per request)
#   NGINX_BIN       (default: nginx on PATH, else /usr/sbin/nginx)
# WXJSSDK__SECTION__KEY variables reach the instances and override their generated config.
#
# STACK_DIR holds instance-N.toml, nginx.conf (rendered from the template),
# pids/NAME.pid ("PID STARTTIME"), logs/NAME.log (redis, sandbox, instance-1..3,
# nginx, nginx-error, nginx-access) and tmp/ (nginx temp files). The same values must be
# in the environment for `down` and `status` as for `up` (at least STACK_DIR).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_DIR=${STACK_DIR:-/tmp/wx-jssdk-stack}
STACK_PORT=${STACK_PORT:-8088}
REDIS_PORT=${REDIS_PORT:-16379}
SANDBOX_PORT=${SANDBOX_PORT:-18090}
INSTANCE_PORTS=${INSTANCE_PORTS:-"18081 18082 18083"}
EXPIRES_IN=${EXPIRES_IN:-7200}
STACK_APPID=${STACK_APPID:-wxstack000000000001}
STACK_SECRET=${STACK_SECRET:-stack-sandbox-secret}
STACK_TOKEN=${STACK_TOKEN:-stack-server-token}
WAIT_SECS=${WAIT_SECS:-30}
export RUST_LOG=${RUST_LOG:-info}

read -r -a PORTS <<<"${INSTANCE_PORTS//,/ }"
INSTANCES=(instance-1 instance-2 instance-3)
# Start order; `down` stops in reverse (nginx first, so no request reaches a stopping instance).
PIECES=(redis sandbox "${INSTANCES[@]}" nginx)
PIDS=$STACK_DIR/pids
LOGS=$STACK_DIR/logs

die() {
  echo "local-stack: $*" >&2
  exit 1
}

# Always talk to loopback directly, whatever proxy the environment names.
http_ok() {
  curl -fsS --noproxy '*' --max-time 2 -o /dev/null "$1"
}

redis_ok() {
  [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

# Field 22 of /proc/PID/stat, the start time: with the pid it names one process for good,
# so a recycled pid is never mistaken for ours. Nothing for a process that is gone or a
# zombie (exited, but its new parent may never reap it). Fields are counted after the
# ")" that ends the command name, which may contain spaces.
start_time() {
  local stat fields
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  read -r -a fields <<<"$stat"
  [[ ${fields[0]} != Z ]] || return 0
  echo "${fields[19]}"
}

# The pid of a piece if it is the process `up` started and it still runs.
running_pid() {
  local file=$PIDS/$1.pid pid started
  [[ -f $file ]] || return 1
  read -r pid started <"$file" || true
  [[ -n ${pid:-} && -n ${started:-} && $(start_time "$pid") == "$started" ]] || return 1
  echo "$pid"
}

# Starts a command in the background, detached from our stdin/stdout/stderr (a caller
# that captures our output would otherwise wait for it), and records its identity.
start_bg() {
  local name=$1
  shift
  "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  local pid=$!
  echo "$pid $(start_time "$pid")" >"$PIDS/$name.pid"
}

log_tail() {
  local log
  for log in "$LOGS/$1.log" "$LOGS/$1-error.log"; do
    [[ -s $log ]] || continue
    echo "--- last lines of $log:" >&2
    tail -n 20 "$log" >&2
  done
}

# Polls CHECK until it succeeds; fails naming the piece (with its log) if the piece
# exits or WAIT_SECS pass.
wait_for() {
  local name=$1
  shift
  local deadline=$((SECONDS + WAIT_SECS))
  until "$@" >/dev/null 2>&1; do
    if ! running_pid "$name" >/dev/null; then
      log_tail "$name"
      die "$name exited during start-up (log: $LOGS/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$name"
      die "$name did not answer within ${WAIT_SECS}s (check: $*)"
    fi
    sleep 0.1
  done
  echo "local-stack: $name is up"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

instance_port() {
  echo "${PORTS[${1#instance-} - 1]}"
}

# What answers for a piece: the check `up` waits for and `status` reports.
check_piece() {
  case $1 in
    redis) redis_ok ;;
    sandbox) http_ok "http://127.0.0.1:$SANDBOX_PORT/sandbox/calls" ;;
    instance-*) http_ok "http://127.0.0.1:$(instance_port "$1")/readyz" ;;
    nginx) http_ok "http://127.0.0.1:$STACK_PORT/healthz" ;;
  esac
}

address_of() {
  case $1 in
    redis) echo "redis://127.0.0.1:$REDIS_PORT" ;;
    sandbox) echo "http://127.0.0.1:$SANDBOX_PORT" ;;
    instance-*) echo "http://127.0.0.1:$(instance_port "$1")" ;;
    nginx) echo "http://127.0.0.1:$STACK_PORT" ;;
  esac
}

find_nginx() {
  NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
  [[ -x $NGINX_BIN ]] || die "nginx is not installed: apt-get install -y nginx"
}

check_prerequisites() {
  command -v redis-server >/dev/null || die "redis-server is not installed: apt-get install -y redis-server"
  command -v redis-cli >/dev/null || die "redis-cli is not installed: apt-get install -y redis-tools"
  command -v curl >/dev/null || die "curl is not installed: apt-get install -y curl"
  find_nginx
  ((${#PORTS[@]} == 3)) || die "INSTANCE_PORTS must name 3 ports, got '$INSTANCE_PORTS'"
  local port
  for port in "$REDIS_PORT" "$SANDBOX_PORT" "${PORTS[@]}" "$STACK_PORT"; do
    [[ $port =~ ^[0-9]+$ ]] || die "'$port' is not a port number"
    # A busy port would make a readiness check succeed against someone else's server.
    if port_in_use "$port"; then die "port $port is already in use on 127.0.0.1"; fi
  done
  if [[ -n ${WXJSSDK_BIN:-} ]]; then
    [[ -x $WXJSSDK_BIN ]] || die "WXJSSDK_BIN=$WXJSSDK_BIN is not an executable"
  else
    WXJSSDK_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/wx-jssdk
    if [[ ! -x $WXJSSDK_BIN ]]; then
      echo "local-stack: $WXJSSDK_BIN missing, building it"
      cargo build --release --manifest-path "$ROOT/Cargo.toml"
    fi
  fi
}

write_instance_config() {
  local port=$1 file=$2
  # The file holds the (sandbox) secret: readable by its owner only.
  (
    umask 077
    cat >"$file" <<EOF
# Generated by deploy/local-stack.sh: instance on port $port.
[server]
bind = "127.0.0.1:$port"
# nginx, on loopback, forwards the client's address in X-Forwarded-For.
trusted_proxies = ["127.0.0.1"]

[redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"

[wechat]
api_base = "http://127.0.0.1:$SANDBOX_PORT"

[apps.default]
appid = "$STACK_APPID"
secret = "$STACK_SECRET"
token = "$STACK_TOKEN"
EOF
  )
}

# The template's one renderer (docker-compose.yml and deploy/check.sh use it too): writes
# STACK_DIR/nginx.conf, with STACK_DIR as nginx's prefix.
render_nginx_conf() {
  sh "$ROOT/deploy/render-nginx-conf.sh" "$STACK_DIR" "127.0.0.1:$STACK_PORT" \
    "127.0.0.1:${PORTS[0]}" "127.0.0.1:${PORTS[1]}" "127.0.0.1:${PORTS[2]}" ||
    die "cannot render $STACK_DIR/nginx.conf from deploy/nginx.conf"
}

# The one place each restartable piece's command line is written: `up` and `restart`
# start it the same way.
start_piece() {
  case $1 in
    redis)
      start_bg redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save "" --appendonly no --dir "$STACK_DIR" --logfile ""
      ;;
    instance-*) start_bg "$1" "$WXJSSDK_BIN" --config "$STACK_DIR/$1.toml" ;;
  esac
}

absolute_state_dir() {
  [[ -d $STACK_DIR ]] || die "no state dir $STACK_DIR"
  STACK_DIR=$(cd "$STACK_DIR" && pwd) # nginx wants absolute paths
  PIDS=$STACK_DIR/pids
  LOGS=$STACK_DIR/logs
}

up() {
  mkdir -p "$STACK_DIR"
  absolute_state_dir
  local piece
  for piece in "${PIECES[@]}"; do
    if running_pid "$piece" >/dev/null; then
      die "$piece already runs from $STACK_DIR: run '$0 down' first"
    fi
  done
  check_prerequisites
  rm -rf "${PIDS:?}" "${LOGS:?}" "${STACK_DIR:?}/tmp"
  mkdir -p "$PIDS" "$LOGS" "$STACK_DIR/tmp"
  # nginx workers run as nobody when started by root; they must reach tmp/ (bodies over
  # 16 KiB are buffered there). Traverse only: the directory is not listable.
  if ((EUID == 0)); then chmod a+x "$STACK_DIR"; fi

  # From here on, a failure stops whatever was started; the logs stay for reading.
  trap 'rc=$?; if ((rc != 0)); then echo "local-stack: up failed, stopping what was started" >&2; down; fi' EXIT

  start_piece redis
  wait_for redis check_piece redis

  start_bg sandbox "$WXJSSDK_BIN" sandbox --bind "127.0.0.1:$SANDBOX_PORT" \
    --expires-in "$EXPIRES_IN" --app "$STACK_APPID:$STACK_SECRET"
  wait_for sandbox check_piece sandbox

  local port
  for piece in "${INSTANCES[@]}"; do
    port=$(instance_port "$piece")
    write_instance_config "$port" "$STACK_DIR/$piece.toml"
    start_piece "$piece"
  done
  for piece in "${INSTANCES[@]}"; do
    wait_for "$piece" check_piece "$piece"
  done

  render_nginx_conf
  local nginx_args=(-p "$STACK_DIR/" -c "$STACK_DIR/nginx.conf" -e "$LOGS/nginx-error.log")
  "$NGINX_BIN" -t -q "${nginx_args[@]}" 2>>"$LOGS/nginx.log" || {
    log_tail nginx
    die "nginx rejects $STACK_DIR/nginx.conf"
  }
  # In the foreground of its own background job: its pid is the master's.
  start_bg nginx "$NGINX_BIN" "${nginx_args[@]}" -g "daemon off;"
  wait_for nginx check_piece nginx

  trap - EXIT
  echo "local-stack: up: http://127.0.0.1:$STACK_PORT (state in $STACK_DIR)"
}

# Sends SIGTERM and waits (bounded) for the exit, then SIGKILL.
stop_pid() {
  local pid=$1 started=${2:-} name=$3
  [[ -n $started ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 10))
  while [[ $(start_time "$pid") == "$started" ]]; do
    if ((SECONDS >= deadline)); then
      echo "local-stack: $name (pid $pid) ignored SIGTERM for 10s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.05
  done
}

down() {
  local i i_child piece pid started child found=0
  for ((i = ${#PIECES[@]} - 1; i >= 0; i--)); do
    piece=${PIECES[i]}
    [[ -f $PIDS/$piece.pid ]] || continue
    found=1
    if pid=$(running_pid "$piece"); then
      started=$(start_time "$pid")
      # nginx's workers are its children: remember them, in case the master must be killed.
      local children=() child_starts=()
      for child in $(pgrep -P "$pid" 2>/dev/null || true); do
        children+=("$child")
        child_starts+=("$(start_time "$child")")
      done
      stop_pid "$pid" "$started" "$piece"
      for i_child in "${!children[@]}"; do
        stop_pid "${children[i_child]}" "${child_starts[i_child]}" "$piece child"
      done
      echo "local-stack: stopped $piece (pid $pid)"
    else
      echo "local-stack: $piece was not running"
    fi
    rm -f "$PIDS/$piece.pid"
  done
  if ((!found)); then echo "local-stack: nothing started from $STACK_DIR is recorded"; fi
}

# Stops one piece the way `down` does (SIGTERM, bounded wait, then SIGKILL) and starts it
# again from the files `up` wrote; returns once it answers, like `up`.
restart() {
  local piece=${1:-} pid started
  case $piece in
    redis | instance-1 | instance-2 | instance-3) ;;
    *) die "restart: PIECE must be redis or instance-1..3, got '$piece'" ;;
  esac
  absolute_state_dir
  pid=$(running_pid "$piece") || die "$piece does not run from $STACK_DIR"
  if [[ $piece == instance-* ]]; then
    WXJSSDK_BIN=${WXJSSDK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/wx-jssdk}
    [[ -x $WXJSSDK_BIN ]] || die "WXJSSDK_BIN=$WXJSSDK_BIN is not an executable"
  fi
  started=$(start_time "$pid")
  stop_pid "$pid" "$started" "$piece"
  echo "local-stack: stopped $piece (pid $pid)"
  local port=$REDIS_PORT
  [[ $piece == redis ]] || port=$(instance_port "$piece")
  if port_in_use "$port"; then die "port $port was taken while $piece was down"; fi
  start_piece "$piece"
  wait_for "$piece" check_piece "$piece"
}

status() {
  local piece pid state answers all=0
  printf '%-11s %-8s %-9s %-8s %s\n' PIECE PID STATE ANSWERS ADDRESS
  for piece in "${PIECES[@]}"; do
    answers=no
    if pid=$(running_pid "$piece"); then
      state=running
      if check_piece "$piece" >/dev/null 2>&1; then answers=yes; else all=1; fi
    else
      pid=- state=stopped all=1
    fi
    printf '%-11s %-8s %-9s %-8s %s\n' "$piece" "$pid" "$state" "$answers" "$(address_of "$piece")"
  done
  echo "state: $STACK_DIR"
  return "$all"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  restart) restart "${2:-}" ;;
  *)
    echo "usage: $0 up|down|status|restart PIECE   (settings: see the top of this script)" >&2
    exit 2
    ;;
esac
