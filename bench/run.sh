#!/usr/bin/env bash
# Benchmark of the release binary against a bare actix-web server measured in the same
# run, on stacks of its own started by deploy/local-stack.sh (private redis-server,
# sandbox WeChat API, 3 instances, nginx). Parts (PARTS, default "shares cold latency scale"):
#
# shares   Warm cache, ONE instance hit directly (no nginx), one worker pinned to CPU 1,
#          wrk -t1 -c64 pinned to CPU 0; the bare baseline (examples/bare.rs: one worker,
#          a fixed body of the size of a signature's answer, same headers) pinned to
#          CPU 1 too. Alternating runs of the baseline, signing (/v1/apps/default/jssdk/config),
#          the seed-compatible signing route (/wxJssdk/getJssdk) and /healthz, ROUNDS
#          rounds, medians, each as a SHARE of the baseline's requests/s: the share is
#          what to compare builds by (other work on the machine slows both sides alike;
#          requests/s are not comparable from one run to the next), and as a share by
#          CPU time per request (the baseline's over the service's, from /proc), which
#          moves even less when something else takes the core for a moment: the
#          verdicts are on the CPU shares (on one saturated core the two agree). Once per log level in
#          LEVELS (default "info warn": info is how the service ships, one access-log
#          line per signature). Also the instance's CPU time per request and peak RSS.
# cold     A fresh stack (empty redis, fresh sandbox), COLD_REQUESTS concurrent
#          signatures spread over the 3 instances; how many token and ticket calls
#          reached the sandbox (the point of the shared cache: 1 and 1).
# latency  Signing at a constant rate (half the saturated rate of the shares part at
#          info, or LATENCY_RATE), with oha's coordinated-omission correction (each
#          request timed from when it was due, as wrk2 does): p50, p99, p99.9. oha is a
#          crates.io package: `cargo install oha` (the part is skipped without it).
# scale    RSS and signing throughput while IDLE_CONNECTIONS (default 10000) idle
#          keep-alive connections are held open (bench/idle.py), and signing throughput
#          with 1, 2 and 4 workers (unpinned: with 2 CPUs, the workers and wrk share them).
#
# Not a test and not in CI: the figures depend on the machine and on what else runs.
# Settings: DURATION (one wrk run, default 5s), ROUNDS (default 3), COLD_REQUESTS
# (default 300, at most 300), WXJSSDK_BIN and BARE_BIN (default: the release build of
# the binary and of examples/bare.rs, built if missing), OHA (default: oha on PATH),
# and the ports and STACK_DIR of deploy/local-stack.sh (defaults below, apart from the
# stack's own so both can run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=$ROOT/deploy/local-stack.sh
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
LEVELS=${LEVELS:-info warn}
PARTS=${PARTS:-shares cold latency scale}
CONNECTIONS=64
COLD_REQUESTS=${COLD_REQUESTS:-300}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
BARE_PORT=${BARE_PORT:-18187}
export STACK_DIR=${STACK_DIR:-/tmp/wx-jssdk-bench}
export STACK_PORT=${STACK_PORT:-18188}
export REDIS_PORT=${REDIS_PORT:-16389}
export SANDBOX_PORT=${SANDBOX_PORT:-18190}
export INSTANCE_PORTS=${INSTANCE_PORTS:-"18181 18182 18183"}
export STACK_APPID=${STACK_APPID:-wxbench000000000001}
read -r -a PORTS <<<"${INSTANCE_PORTS//,/ }"
PAGE="url=https%3A%2F%2Fpage.example.com%2Fbench"
SIGN_PATH="/v1/apps/default/jssdk/config?$PAGE"
SEED_PATH="/wxJssdk/getJssdk?$PAGE"
INSTANCE=http://127.0.0.1:${PORTS[0]}
RESULTS=$(mktemp -d /tmp/wx-jssdk-bench-results.XXXXXX)
REPORT=$RESULTS/report.txt
BARE_PID=

die() {
  echo "bench: $*" >&2
  exit 1
}

part() {
  [[ " $PARTS " == *" $1 "* ]]
}

((COLD_REQUESTS >= 1 && COLD_REQUESTS <= 300)) || die "COLD_REQUESTS must be 1..300 (curl's --parallel-max limit)"

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WXJSSDK_BIN=${WXJSSDK_BIN:-$TARGET_DIR/release/wx-jssdk}
BARE_BIN=${BARE_BIN:-$TARGET_DIR/release/examples/bare}
if [[ ! -x $WXJSSDK_BIN || ! -x $BARE_BIN ]]; then
  echo "bench: building $WXJSSDK_BIN and $BARE_BIN"
  cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin wx-jssdk --example bare
fi
export WXJSSDK_BIN
if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
OHA=${OHA:-$(command -v oha || true)}

# Whatever happens, the stack and the baseline go down (the stack's logs stay in STACK_DIR).
cleanup() {
  "$STACK" down >/dev/null 2>&1 || true
  [[ -z $BARE_PID ]] || kill "$BARE_PID" 2>/dev/null || true
  [[ -z ${IDLE_PID:-} ]] || kill "$IDLE_PID" 2>/dev/null || true
}
trap cleanup EXIT

# A wrk latency figure (us, ms or s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000
    printf "%.3f", n
  }'
}

# CPU time (user + system, all threads) process $1 has used so far, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# The pid of a stack instance (1..3).
instance_pid() {
  cut -d' ' -f1 "$STACK_DIR/pids/instance-$1.pid"
}

# Runs wrk (WRK_CPUS, default CPU 0; WRK_ARGS, default -t1 -cCONNECTIONS) on URL, with
# process PID as the server; sets RPS, P50, P99 (ms) and CPU (us of server CPU per
# request). A non-2xx answer makes the figures meaningless (errors are cheap), so it
# stops the run.
measure() {
  local name=$1 url=$2 pid=$3 out=$RESULTS/wrk-$1.txt before after
  local -a args
  read -r -a args <<<"${WRK_ARGS:--t1 -c$CONNECTIONS}"
  before=$(cpu_ticks "$pid")
  taskset -c "${WRK_CPUS:-0}" wrk "${args[@]}" -d"$DURATION" --latency "$url" >"$out"
  after=$(cpu_ticks "$pid")
  if grep -q 'Non-2xx\|Socket errors' "$out"; then
    cat "$out" >&2
    die "$name: wrk saw errors (above); the stack's logs are in $STACK_DIR/logs"
  fi
  RPS=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
  P50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
  P99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
  CPU=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '/requests in/ {printf "%.2f", t / hz * 1e6 / $1}' "$out")
}

# The median of each column of "rps p50 p99 cpu" lines.
medians() {
  printf '%s\n' "$@" | awk '
    { for (c = 1; c <= NF; c++) v[c, NR] = $c }
    END {
      for (c = 1; c <= NF; c++) {
        n = 0
        for (r = 1; r <= NR; r++) col[++n] = v[c, r]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (col[j] < col[i]) { t = col[i]; col[i] = col[j]; col[j] = t }
        printf "%s%s", (c > 1 ? " " : ""), col[int((n + 1) / 2)]
      }
      print ""
    }'
}

# Sandbox call counts: `token + stable_token` and `getticket`.
upstream_calls() {
  local json classic stable
  json=$(curl -fsS --noproxy '*' "http://127.0.0.1:$SANDBOX_PORT/sandbox/calls")
  [[ $json =~ \"token\":([0-9]+) ]] || die "no token count in $json"
  classic=${BASH_REMATCH[1]}
  [[ $json =~ \"stable_token\":([0-9]+) ]] || die "no stable_token count in $json"
  stable=${BASH_REMATCH[1]}
  [[ $json =~ \"getticket\":([0-9]+) ]] || die "no getticket count in $json"
  TICKET_CALLS=${BASH_REMATCH[1]}
  TOKEN_CALLS=$((classic + stable))
}

# ok or MISS, from a comparison written for awk (figures may be decimals).
verdict() {
  if awk "BEGIN { exit !($1) }"; then echo ok; else echo MISS; fi
}

# $1 / $2 with two decimals.
share() {
  awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'
}

row() {
  printf '%-40s %-40s %-10s %s\n' "$@"
}

# Starts the stack with one worker per instance (or $1) at log level RUST_LOG, and
# warms instance 1.
stack_up() {
  WXJSSDK__SERVER__WORKERS=${1:-1} "$STACK" up >"$RESULTS/stack-up.txt" ||
    die "the stack did not start: see $RESULTS/stack-up.txt"
  curl -fsS --noproxy '*' -o /dev/null "$INSTANCE$SIGN_PATH" || die "the warming signature failed"
}

# The baseline, pinned to CPU 1 like the instance, answering a body as large as a signature.
start_bare() {
  local size
  size=$(curl -fsS --noproxy '*' -o /dev/null -w '%{size_download}' "$INSTANCE$SIGN_PATH")
  "$BARE_BIN" "127.0.0.1:$BARE_PORT" "$size" >"$RESULTS/bare.log" 2>&1 &
  BARE_PID=$!
  for _ in $(seq 50); do
    curl -fsS --noproxy '*' -o /dev/null "http://127.0.0.1:$BARE_PORT/" 2>/dev/null && break
    sleep 0.1
  done
  taskset -a -p -c 1 "$BARE_PID" >/dev/null
  echo "bench: bare baseline on port $BARE_PORT, $size-byte body"
}

echo "bench: machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
{
  echo "wx-jssdk benchmark: release build, $(nproc) CPUs, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "wrk -t1 -c$CONNECTIONS -d$DURATION x $ROUNDS rounds (medians); server on CPU 1 (one worker), wrk on CPU 0"
  row METRIC MEASURED TARGET VERDICT
} >"$REPORT"

# --- shares: the service against the bare baseline, per log level.
if part shares; then
  for level in $LEVELS; do
    RUST_LOG=$level stack_up 1
    PID=$(instance_pid 1)
    taskset -a -p -c 1 "$PID" >/dev/null
    [[ -n $BARE_PID ]] || start_bare
    BARE_RUNS=() SIGN_RUNS=() SEED_RUNS=() HEALTH_RUNS=()
    # Alternate the endpoints for ROUNDS rounds and keep the median of each figure: one
    # run on a shared machine can be off by a third either way.
    for ((round = 1; round <= ROUNDS; round++)); do
      measure "$level-bare-$round" "http://127.0.0.1:$BARE_PORT$SEED_PATH" "$BARE_PID"
      BARE_RUNS+=("$RPS $P50 $P99 $CPU")
      measure "$level-sign-$round" "$INSTANCE$SIGN_PATH" "$PID"
      SIGN_RUNS+=("$RPS $P50 $P99 $CPU")
      measure "$level-seed-$round" "$INSTANCE$SEED_PATH" "$PID"
      SEED_RUNS+=("$RPS $P50 $P99 $CPU")
      measure "$level-healthz-$round" "$INSTANCE/healthz" "$PID"
      HEALTH_RUNS+=("$RPS $P50 $P99 $CPU")
    done
    read -r BARE_RPS BARE_P50 BARE_P99 BARE_CPU <<<"$(medians "${BARE_RUNS[@]}")"
    read -r SIGN_RPS SIGN_P50 SIGN_P99 SIGN_CPU <<<"$(medians "${SIGN_RUNS[@]}")"
    read -r SEED_RPS SEED_P50 SEED_P99 SEED_CPU <<<"$(medians "${SEED_RUNS[@]}")"
    read -r HEALTH_RPS HEALTH_P50 HEALTH_P99 HEALTH_CPU <<<"$(medians "${HEALTH_RUNS[@]}")"
    RSS_MB=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$PID/status")
    [[ $level != info ]] || SATURATED_SIGN_RPS=$SIGN_RPS
    {
      echo "--- shares, RUST_LOG=$level: requests/s, share of the baseline's requests/s, share by CPU time per request (baseline's / this one's), p50/p99 ms, CPU us/request"
      row "bare actix-web baseline" "$BARE_RPS 1.00 1.00 $BARE_P50/$BARE_P99 ${BARE_CPU}us" "" ""
      row "signing /v1/apps/default/jssdk/config" "$SIGN_RPS $(share "$SIGN_RPS" "$BARE_RPS") $(share "$BARE_CPU" "$SIGN_CPU") $SIGN_P50/$SIGN_P99 ${SIGN_CPU}us" ">= 0.85" "$(verdict "$BARE_CPU / $SIGN_CPU >= 0.85")"
      row "seed-compatible /wxJssdk/getJssdk" "$SEED_RPS $(share "$SEED_RPS" "$BARE_RPS") $(share "$BARE_CPU" "$SEED_CPU") $SEED_P50/$SEED_P99 ${SEED_CPU}us" ">= 0.85" "$(verdict "$BARE_CPU / $SEED_CPU >= 0.85")"
      row "/healthz" "$HEALTH_RPS $(share "$HEALTH_RPS" "$BARE_RPS") $(share "$BARE_CPU" "$HEALTH_CPU") $HEALTH_P50/$HEALTH_P99 ${HEALTH_CPU}us" ">= 0.95" "$(verdict "$BARE_CPU / $HEALTH_CPU >= 0.95")"
      row "peak RSS of the instance (VmHWM, MB)" "$RSS_MB" "< 30" "$(verdict "$RSS_MB < 30")"
      # On one saturated core the two shares agree; when they do not, something else
      # took the core during some rounds and the requests/s are not to be read.
      if ! awk -v a="$(share "$SIGN_RPS" "$BARE_RPS")" -v b="$(share "$BARE_CPU" "$SIGN_CPU")" 'BEGIN { d = a - b; exit !(d < 0.1 && d > -0.1) }'; then
        echo "(the requests/s and CPU shares of signing disagree: the rounds were disturbed; the verdicts use the CPU shares)"
      fi
    } >>"$REPORT"
    "$STACK" down >/dev/null
  done
fi

# --- cold: a new `up` means an empty redis (no persistence) and a sandbox whose
# counters start at 0.
if part cold; then
  RUST_LOG=info WXJSSDK__SERVER__WORKERS=1 "$STACK" up >"$RESULTS/stack-up-cold.txt" ||
    die "the stack did not start: see $RESULTS/stack-up-cold.txt"
  # One curl process, every transfer opened at once; request i goes to instance i mod 3.
  for ((i = 0; i < COLD_REQUESTS; i++)); do
    printf 'url = "http://127.0.0.1:%s%s"\noutput = "/dev/null"\n' "${PORTS[i % 3]}" "$SEED_PATH"
  done >"$RESULTS/cold.curl"
  curl --noproxy '*' -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$COLD_REQUESTS" \
    --max-time 30 -w '%{http_code}\n' -K "$RESULTS/cold.curl" >"$RESULTS/cold-codes.txt" 2>"$RESULTS/cold-curl.err" || true
  COLD_OK=$(grep -c '^200$' "$RESULTS/cold-codes.txt" || true)
  upstream_calls
  "$STACK" down >/dev/null
  {
    echo "--- cold start: fresh redis + sandbox, 3 instances"
    row "$COLD_REQUESTS concurrent signs answered 200" "$COLD_OK/$COLD_REQUESTS" "all" "$(verdict "$COLD_OK == $COLD_REQUESTS")"
    row "token calls to the sandbox" "$TOKEN_CALLS" "1" "$(verdict "$TOKEN_CALLS == 1")"
    row "ticket calls to the sandbox" "$TICKET_CALLS" "1" "$(verdict "$TICKET_CALLS == 1")"
  } >>"$REPORT"
fi

# --- latency at a constant rate, below saturation; the baseline at the same rate says
# how much of it the load generator and the machine account for.
# Sets L50, L99, L999 (ms), LRPS and LBAD (non-200 answers and errors), medians of ROUNDS
# oha runs of 10 s at RATE against URL.
constant_rate() {
  local name=$1 url=$2 runs=() out
  for ((round = 1; round <= ROUNDS; round++)); do
    out=$RESULTS/oha-$name-$round.json
    taskset -c 0 "$OHA" --no-tui --output-format json -z 10s -c "$CONNECTIONS" -q "$RATE" \
      --latency-correction "$url" >"$out"
    runs+=("$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
p, codes = r["latencyPercentiles"], r["statusCodeDistribution"]
errors = r.get("errorDistribution") or {}
# Requests still in flight when the 10 s are up are cut off by oha, not failed.
bad = sum(n for c, n in codes.items() if c != "200") + sum(n for e, n in errors.items() if e != "aborted due to deadline")
print("%.3f %.3f %.3f %.0f %d" % (p["p50"] * 1e3, p["p99"] * 1e3, p["p99.9"] * 1e3, r["summary"]["requestsPerSec"], bad))
' "$out")")
  done
  read -r L50 L99 L999 LRPS LBAD <<<"$(medians "${runs[@]}")"
}

if part latency; then
  if [[ -z $OHA ]]; then
    echo "--- latency: skipped (no oha: cargo install oha)" >>"$REPORT"
  else
    RATE=${LATENCY_RATE:-$((${SATURATED_SIGN_RPS:-40000} / 2))}
    RUST_LOG=info stack_up 1
    PID=$(instance_pid 1)
    taskset -a -p -c 1 "$PID" >/dev/null
    [[ -n $BARE_PID ]] || start_bare
    {
      echo "--- latency at a constant $RATE requests/s (${LATENCY_RATE:+LATENCY_RATE, not }half the saturated signing rate at info; oha -q, coordinated-omission corrected, 10 s x $ROUNDS, medians), RUST_LOG=info"
      constant_rate bare "http://127.0.0.1:$BARE_PORT$SIGN_PATH"
      row "bare baseline: p50 / p99 / p99.9 (ms)" "$L50 / $L99 / $L999" "" ""
      constant_rate sign "$INSTANCE$SIGN_PATH"
      row "signing: achieved requests/s, failed answers" "$LRPS, $LBAD" "" "$(verdict "$LBAD == 0")"
      row "signing: p50 / p99 / p99.9 (ms)" "$L50 / $L99 / $L999" "p99 < 1" "$(verdict "$L99 < 1")"
    } >>"$REPORT"
    "$STACK" down >/dev/null
  fi
fi

# --- scale: idle connections, then workers.
if part scale; then
  ulimit -n $((IDLE_CONNECTIONS + 4096))
  RUST_LOG=info stack_up 1
  PID=$(instance_pid 1)
  taskset -a -p -c 1 "$PID" >/dev/null
  RSS_BEFORE=$(awk '/^VmRSS:/ {print $2}' "/proc/$PID/status")
  measure "idle-0" "$INSTANCE$SIGN_PATH" "$PID"
  RPS_BEFORE=$RPS
  taskset -c 0 python3 "$ROOT/bench/idle.py" 127.0.0.1 "${PORTS[0]}" "$IDLE_CONNECTIONS" >"$RESULTS/idle.log" 2>&1 &
  IDLE_PID=$!
  for _ in $(seq 600); do
    grep -q '^ready' "$RESULTS/idle.log" && break
    kill -0 "$IDLE_PID" 2>/dev/null || die "bench/idle.py stopped: $(cat "$RESULTS/idle.log")"
    sleep 0.1
  done
  grep -q '^ready' "$RESULTS/idle.log" || die "bench/idle.py did not open its connections in 60 s"
  RSS_IDLE=$(awk '/^VmRSS:/ {print $2}' "/proc/$PID/status")
  measure "idle-$IDLE_CONNECTIONS" "$INSTANCE$SIGN_PATH" "$PID"
  RPS_IDLE=$RPS
  OPEN=$(ss -Htn state established "( sport = :${PORTS[0]} )" | wc -l)
  kill "$IDLE_PID" 2>/dev/null || true
  wait "$IDLE_PID" 2>/dev/null || true
  IDLE_PID=
  "$STACK" down >/dev/null
  {
    echo "--- scale: $IDLE_CONNECTIONS idle keep-alive connections held open (a /healthz on each every 3 s), RUST_LOG=info"
    row "RSS before / with them (MB)" "$(awk -v a="$RSS_BEFORE" -v b="$RSS_IDLE" 'BEGIN {printf "%.1f / %.1f", a / 1024, b / 1024}')" "" ""
    row "memory per idle connection (KB)" "$(awk -v a="$RSS_BEFORE" -v b="$RSS_IDLE" -v n="$IDLE_CONNECTIONS" 'BEGIN {printf "%.1f", (b - a) / n}')" "" ""
    row "connections established after the wrk run" "$OPEN" "" ""
    row "signing requests/s before / with them" "$RPS_BEFORE / $RPS_IDLE ($(share "$RPS_IDLE" "$RPS_BEFORE"))" "" ""
    echo "--- scale: workers (instance and wrk -t2 -c128 unpinned, sharing the 2 CPUs), RUST_LOG=info"
  } >>"$REPORT"
  for workers in 1 2 4; do
    RUST_LOG=info stack_up "$workers"
    PID=$(instance_pid 1)
    WRK_CPUS=0,1 WRK_ARGS="-t2 -c128" measure "workers-$workers" "$INSTANCE$SIGN_PATH" "$PID"
    row "signing requests/s, $workers worker(s)" "$RPS (p99 $P99 ms)" "" "" >>"$REPORT"
    "$STACK" down >/dev/null
  done
fi

echo
cat "$REPORT"
echo "raw wrk/oha output and curl results: $RESULTS; stack logs: $STACK_DIR/logs"
