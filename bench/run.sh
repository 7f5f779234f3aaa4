#!/usr/bin/env bash
# Benchmark of the release binary, in two parts, each on a stack of its own started by
# deploy/local-stack.sh (private redis-server, sandbox WeChat API, 3 instances, nginx):
#
# 1. Warm cache, ONE instance hit directly (no nginx in the way), wrk -t1 -c64 on CPU 0
#    against the instance pinned to CPU 1 (one worker):
#    requests/s, p50 and p99 of the sign endpoint and of /healthz, their ratio (how
#    much a signature costs over bare HTTP), the instance's CPU time per request (user +
#    system, from /proc: unlike requests/s it barely moves when other processes compete
#    for the machine, so it is the figure to compare two builds by), and its peak RSS.
# 2. Cold start: a fresh stack (empty redis, fresh sandbox), COLD_REQUESTS concurrent
#    signatures spread evenly over the 3 instances; how many token and ticket calls
#    reached the sandbox (the whole point of the shared cache: 1 and 1).
#
# Not a test and not in CI: the figures depend on the machine and on what else runs.
# Settings: DURATION (one wrk run, default 5s), ROUNDS (alternating runs of each endpoint,
# medians reported, default 3), COLD_REQUESTS (default 300, at most 300),
# WXJSSDK_BIN (default target/release/wx-jssdk, built if missing), RUST_LOG (default
# info, as in production: one log line per signature), and the ports and STACK_DIR of
# deploy/local-stack.sh (defaults below, apart from the stack's own so both can run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=$ROOT/deploy/local-stack.sh
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
SIGN_RUNS=() HEALTH_RUNS=()
CONNECTIONS=64
COLD_REQUESTS=${COLD_REQUESTS:-300}
export STACK_DIR=${STACK_DIR:-/tmp/wx-jssdk-bench}
export STACK_PORT=${STACK_PORT:-18188}
export REDIS_PORT=${REDIS_PORT:-16389}
export SANDBOX_PORT=${SANDBOX_PORT:-18190}
export INSTANCE_PORTS=${INSTANCE_PORTS:-"18181 18182 18183"}
export STACK_APPID=${STACK_APPID:-wxbench000000000001}
read -r -a PORTS <<<"${INSTANCE_PORTS//,/ }"
SIGN_PATH="/wxJssdk/getJssdk?url=https%3A%2F%2Fpage.example.com%2Fbench"
RESULTS=$(mktemp -d /tmp/wx-jssdk-bench-results.XXXXXX)

die() {
  echo "bench: $*" >&2
  exit 1
}

((COLD_REQUESTS >= 1 && COLD_REQUESTS <= 300)) || die "COLD_REQUESTS must be 1..300 (curl's --parallel-max limit)"

if [[ -z ${WXJSSDK_BIN:-} ]]; then
  WXJSSDK_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/wx-jssdk
  if [[ ! -x $WXJSSDK_BIN ]]; then
    echo "bench: building $WXJSSDK_BIN"
    cargo build --release --manifest-path "$ROOT/Cargo.toml"
  fi
fi
export WXJSSDK_BIN
if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi

# Whatever happens, the stack goes down (its logs stay in STACK_DIR for reading).
trap '"$STACK" down >/dev/null 2>&1 || true' EXIT

# A wrk latency figure (us, ms or s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000
    printf "%.3f", n
  }'
}

# CPU time (user + system, all threads) the instance has used so far, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$PID/stat"
}

# Runs wrk on URL; sets RPS, P50, P99 (ms) and CPU (us of instance CPU per request). A
# non-2xx answer makes the figures meaningless (errors are cheap), so it stops the run.
measure() {
  local name=$1 url=$2 out=$RESULTS/wrk-$1.txt before after
  echo "bench: taskset -c 0 wrk -t1 -c$CONNECTIONS -d$DURATION --latency $url"
  before=$(cpu_ticks)
  taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >"$out"
  after=$(cpu_ticks)
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

echo "bench: machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- Part 1: one instance, warm cache. On a 2-CPU machine the load generator and the
# server would fight for the same cores and the figures would measure the scheduler:
# the instance gets CPU 1 (one worker), wrk gets CPU 0.
WXJSSDK__SERVER__WORKERS=1 "$STACK" up >"$RESULTS/stack-up-1.txt" || die "the stack did not start: see $RESULTS/stack-up-1.txt"
taskset -a -p -c 1 "$(cut -d' ' -f1 "$STACK_DIR/pids/instance-1.pid")" >/dev/null
INSTANCE=http://127.0.0.1:${PORTS[0]}
curl -fsS --noproxy '*' -o /dev/null "$INSTANCE$SIGN_PATH" || die "the warming signature failed"
PID=$(cut -d' ' -f1 "$STACK_DIR/pids/instance-1.pid")
# Alternate the two endpoints for ROUNDS rounds and keep the median of each figure:
# one run on a shared machine can be off by a third either way.
for ((round = 1; round <= ROUNDS; round++)); do
  measure "sign-$round" "$INSTANCE$SIGN_PATH"
  SIGN_RUNS+=("$RPS $P50 $P99 $CPU")
  measure "healthz-$round" "$INSTANCE/healthz"
  HEALTH_RUNS+=("$RPS $P50 $P99 $CPU")
done
read -r SIGN_RPS SIGN_P50 SIGN_P99 SIGN_CPU <<<"$(medians "${SIGN_RUNS[@]}")"
read -r HEALTH_RPS HEALTH_P50 HEALTH_P99 HEALTH_CPU <<<"$(medians "${HEALTH_RUNS[@]}")"
RSS_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$PID/status")
RSS_MB=$(awk -v kb="$RSS_KB" 'BEGIN {printf "%.1f", kb / 1024}')
RATIO=$(awk -v s="$SIGN_RPS" -v h="$HEALTH_RPS" 'BEGIN {printf "%.2f", s / h}')
"$STACK" down >/dev/null

# --- Part 2: cold start over 3 instances. A new `up` means an empty redis (no
# persistence) and a sandbox whose counters start at 0.
"$STACK" up >"$RESULTS/stack-up-2.txt" || die "the stack did not start: see $RESULTS/stack-up-2.txt"
# One curl process, every transfer opened at once; request i goes to instance i mod 3.
for ((i = 0; i < COLD_REQUESTS; i++)); do
  printf 'url = "http://127.0.0.1:%s%s"\noutput = "/dev/null"\n' "${PORTS[i % 3]}" "$SIGN_PATH"
done >"$RESULTS/cold.curl"
curl --noproxy '*' -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$COLD_REQUESTS" \
  --max-time 30 -w '%{http_code}\n' -K "$RESULTS/cold.curl" >"$RESULTS/cold-codes.txt" 2>"$RESULTS/cold-curl.err" || true
COLD_OK=$(grep -c '^200$' "$RESULTS/cold-codes.txt" || true)
upstream_calls
# Read from the instances' request logs (written at info level), not assumed from the routing.
SPREAD=$(for i in 1 2 3; do grep -c '"GET /wxJssdk/getJssdk"' "$STACK_DIR/logs/instance-$i.log" || true; done | paste -sd/)
[[ $SPREAD != 0/0/0 ]] || SPREAD="n/a (RUST_LOG < info)"
"$STACK" down >/dev/null

cat <<EOF

wx-jssdk benchmark: $(basename "$WXJSSDK_BIN") release, RUST_LOG=${RUST_LOG:-info}, $(nproc) CPUs (instance on CPU 1, wrk on CPU 0), wrk -t1 -c$CONNECTIONS -d$DURATION x $ROUNDS rounds (medians)
part 1: one instance, warm cache, direct (no nginx)   part 2: fresh redis + sandbox, 3 instances
$(printf '%-44s %-20s %-12s %s' METRIC MEASURED TARGET VERDICT)
$(printf '%-44s %-20s %-12s %s' "sign: requests/s" "$SIGN_RPS" "" "")
$(printf '%-44s %-20s %-12s %s' "sign: latency p50 / p99 (ms)" "$SIGN_P50 / $SIGN_P99" "p99 < 2" "$(verdict "$SIGN_P99 < 2")")
$(printf '%-44s %-20s %-12s %s' "healthz: requests/s" "$HEALTH_RPS" "" "")
$(printf '%-44s %-20s %-12s %s' "healthz: latency p50 / p99 (ms)" "$HEALTH_P50 / $HEALTH_P99" "" "")
$(printf '%-44s %-20s %-12s %s' "sign_rps / healthz_rps" "$RATIO" ">= 0.9" "$(verdict "$RATIO >= 0.9")")
$(printf '%-44s %-20s %-12s %s' "instance CPU per request, sign / healthz (us)" "$SIGN_CPU / $HEALTH_CPU" "" "")
$(printf '%-44s %-20s %-12s %s' "peak RSS of the instance (VmHWM, MB)" "$RSS_MB" "< 30" "$(verdict "$RSS_MB < 30")")
$(printf '%-44s %-20s %-12s %s' "cold: $COLD_REQUESTS concurrent signs answered 200" "$COLD_OK/$COLD_REQUESTS" "all" "$(verdict "$COLD_OK == $COLD_REQUESTS")")
$(printf '%-44s %-20s %-12s %s' "cold: served per instance" "$SPREAD" "" "")
$(printf '%-44s %-20s %-12s %s' "cold: token calls to the sandbox" "$TOKEN_CALLS" "1" "$(verdict "$TOKEN_CALLS == 1")")
$(printf '%-44s %-20s %-12s %s' "cold: ticket calls to the sandbox" "$TICKET_CALLS" "1" "$(verdict "$TICKET_CALLS == 1")")
raw wrk output and curl results: $RESULTS; stack logs: $STACK_DIR/logs
EOF
