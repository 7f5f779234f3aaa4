#!/usr/bin/env bash
# Soak: the load-balanced stack of deploy/local-stack.sh (3 instances, one Redis, the
# sandbox, nginx) under steady load for DURATION seconds, with tokens and tickets that
# live EXPIRES_IN seconds so that many renewal windows pass, a Redis restart (empty
# afterwards) and an instance restart on the way. Exits non-zero when a limit is broken:
#
#   - a non-2xx answer (or no answer) outside the announced windows: the Redis restart
#     (from SIGTERM until it answers again + lock_wait_ms + local_recheck_ms, any target,
#     503 only: a cold instance's answer) and the instance restart (from SIGTERM until
#     /readyz answers, requests sent to that instance directly, 503 or no answer; nginx
#     must hide it);
#   - a 200 answer whose signature does not verify against a ticket the sandbox issued
#     (every answer is checked, see soak/load.py);
#   - more jsapi ticket calls to WeChat than floor(T / P) + 1 + 1 (one per renewal
#     period P elapsed, the first fetch, one refetch after the Redis restart), and the
#     same for token calls (a token is fetched when a ticket renewal needs one);
#   - an instance whose RSS grew by more than max(RSS_GROWTH_MB, RSS_GROWTH_PCT %)
#     between warm-up and the end.
#
# Settings (environment): DURATION [600] seconds of load, EXPIRES_IN [20], RATE [200]
# requests/s in total, spread evenly over nginx and the 3 instances directly, WARMUP [10]
# seconds before the first RSS reading, RSS_GROWTH_MB [5], RSS_GROWTH_PCT [20],
# TOKEN_MODE [stable], WXJSSDK_BIN, and local-stack.sh's STACK_DIR and ports (defaults
# below: neither the stack's nor the benchmark's, so all three can run at once).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=$ROOT/deploy/local-stack.sh
DURATION=${DURATION:-600}
RATE=${RATE:-200}
WARMUP=${WARMUP:-10}
RSS_GROWTH_MB=${RSS_GROWTH_MB:-5}
RSS_GROWTH_PCT=${RSS_GROWTH_PCT:-20}
export EXPIRES_IN=${EXPIRES_IN:-20}
export STACK_DIR=${STACK_DIR:-/tmp/wx-jssdk-soak}
export STACK_PORT=${STACK_PORT:-18288}
export REDIS_PORT=${REDIS_PORT:-16399}
export SANDBOX_PORT=${SANDBOX_PORT:-18290}
export INSTANCE_PORTS=${INSTANCE_PORTS:-"18281 18282 18283"}
export STACK_APPID=${STACK_APPID:-wxsoak0000000000001}
# warn: an access-log line per request at 200/s for 10 minutes is noise, not evidence.
export RUST_LOG=${RUST_LOG:-warn}
# The shipped default (stable) unless TOKEN_MODE says otherwise; both keep the limit.
export WXJSSDK__WECHAT__TOKEN_MODE=${TOKEN_MODE:-stable}
read -r -a PORTS <<<"${INSTANCE_PORTS//,/ }"
# The cache settings the instances run with (the shipped defaults, see docs/operations.md).
SAFETY_MARGIN_SECS=60 REFRESH_AHEAD_SECS=900 LOCK_WAIT_SECS=5 RECHECK_SECS=1
SANDBOX=http://127.0.0.1:$SANDBOX_PORT
# Next to the stack's logs, replaced by each run.
RESULTS=$STACK_DIR/soak
WINDOWS=$RESULTS/windows.txt
FAILURES=()

die() {
  echo "soak: $*" >&2
  exit 1
}

if ! [[ $DURATION =~ ^[0-9]+$ ]] || ((DURATION < 30)); then die "DURATION must be at least 30 (seconds)"; fi
if ! [[ $EXPIRES_IN =~ ^[0-9]+$ ]] || ((EXPIRES_IN < 10)); then die "EXPIRES_IN must be at least 10 (seconds)"; fi
((WARMUP < DURATION / 3)) || die "WARMUP must be under DURATION/3"
command -v python3 >/dev/null || die "python3 is needed for the load generator"

if [[ -z ${WXJSSDK_BIN:-} ]]; then
  WXJSSDK_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/wx-jssdk
  if [[ ! -x $WXJSSDK_BIN ]]; then
    echo "soak: building $WXJSSDK_BIN"
    cargo build --release --manifest-path "$ROOT/Cargo.toml"
  fi
fi
export WXJSSDK_BIN

LOAD_PID=
# Whatever happens: the load generator (it also stops by itself) and the stack go down.
cleanup() {
  if [[ -n $LOAD_PID ]]; then kill "$LOAD_PID" 2>/dev/null || true; fi
  "$STACK" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# The soak's timeline is fixed in advance: sleep until the next event is due.
sleep_until() {
  local wait
  wait=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }')
  sleep "$wait"
}

instance_pid() { cut -d' ' -f1 "$STACK_DIR/pids/$1.pid"; }
# 0 for a process that is gone: the status check at the end reports that, by name.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

fail() {
  FAILURES+=("$*")
  echo "soak: LIMIT BROKEN: $*" >&2
}

# The renewal period P of a value that lives EXPIRES_IN seconds, as src/cache/record.rs
# computes it: usable life U = L - min(margin, L/5), renewal min(ahead, U/2) before its end.
PERIOD=$(awk -v l="$EXPIRES_IN" -v m="$SAFETY_MARGIN_SECS" -v a="$REFRESH_AHEAD_SECS" 'BEGIN {
  margin = (m < l / 5 ? m : l / 5); u = l - margin; ahead = (a < u / 2 ? a : u / 2)
  printf "%.3f", u - ahead }')

echo "soak: DURATION=${DURATION}s EXPIRES_IN=${EXPIRES_IN}s (renewal period ${PERIOD}s) RATE=${RATE}/s token_mode=$WXJSSDK__WECHAT__TOKEN_MODE details in $RESULTS"
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
T0=$(now)
"$STACK" up >"$RESULTS/stack-up.txt" 2>&1 || {
  cat "$RESULTS/stack-up.txt" >&2
  die "the stack did not start"
}
: >"$WINDOWS"

# The load: nginx (the production path) and each instance directly, so that an
# instance's own failures are not hidden by nginx's retries.
TARGETS=http://127.0.0.1:$STACK_PORT
for port in "${PORTS[@]}"; do TARGETS+=",http://127.0.0.1:$port"; done
LOAD_START=$(now)
python3 "$ROOT/soak/load.py" --targets "$TARGETS" --rate "$RATE" --duration "$DURATION" \
  --sandbox "$SANDBOX" --appid "$STACK_APPID" --expires-in "$EXPIRES_IN" \
  --windows-file "$WINDOWS" --out "$RESULTS/load.json" >"$RESULTS/load.txt" 2>&1 &
LOAD_PID=$!
at() { awk -v s="$LOAD_START" -v o="$1" 'BEGIN { printf "%.3f", s + o }'; }

declare -A RSS_START RSS_END
sleep_until "$(at "$WARMUP")"
for i in 1 2 3; do RSS_START[$i]=$(rss_kb "$(instance_pid "instance-$i")"); done

# Redis restart at a third of the run. It has no persistence: it comes back empty, and
# an instance that needs a value before it has refetched one may answer 503.
sleep_until "$(at $((DURATION / 3)))"
start=$(now)
"$STACK" restart redis >>"$RESULTS/restarts.txt" 2>&1 || die "redis did not come back: $(cat "$RESULTS/restarts.txt")"
end=$(awk -v t="$(now)" -v w=$((LOCK_WAIT_SECS + RECHECK_SECS)) 'BEGIN { printf "%.3f", t + w }')
echo "redis-restart $start $end * 503" >>"$WINDOWS"
echo "soak: redis restarted at +$(elapsed_since "$LOAD_START")s, DBSIZE right after: $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" dbsize)"

# Instance 2 restart at half the run: SIGTERM (graceful), then the same command again.
sleep_until "$(at $((DURATION / 2)))"
start=$(now)
"$STACK" restart instance-2 >>"$RESULTS/restarts.txt" 2>&1 || die "instance-2 did not come back: $(cat "$RESULTS/restarts.txt")"
echo "instance-2-restart $start $(now) http://127.0.0.1:${PORTS[1]} 503,conn" >>"$WINDOWS"
echo "soak: instance-2 restarted at +$(elapsed_since "$LOAD_START")s"
# Its RSS baseline is its own warm-up after the restart.
sleep_until "$(at $((DURATION / 2 + WARMUP)))"
RSS_START[2]=$(rss_kb "$(instance_pid instance-2)")

# load.py stops by itself at DURATION; its exit status is its verdict on the answers.
load_rc=0
wait "$LOAD_PID" || load_rc=$?
LOAD_PID=
for i in 1 2 3; do RSS_END[$i]=$(rss_kb "$(instance_pid "instance-$i")"); done
CALLS=$(curl -fsS --noproxy '*' "$SANDBOX/sandbox/calls") || die "cannot read the sandbox's call counts"
T=$(elapsed_since "$T0")
"$STACK" status >"$RESULTS/status.txt" 2>&1 || fail "a piece of the stack stopped answering: $(cat "$RESULTS/status.txt")"

[[ -s $RESULTS/load.json ]] || die "the load generator wrote no results: $(cat "$RESULTS/load.txt")"
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
TOTAL=$(field "$RESULTS/load.json" total)
OUTSIDE=$(field "$RESULTS/load.json" non_2xx_outside_windows)
INSIDE=$(field "$RESULTS/load.json" non_2xx_inside_windows)
CHECKED=$(field "$RESULTS/load.json" answers_200_checked)
UNVERIFIED=$(field "$RESULTS/load.json" answers_200_unverified)
TICKETS_SEEN=$(field "$RESULTS/load.json" tickets_seen)
BY_TARGET=$(field "$RESULTS/load.json" by_target)
((OUTSIDE == 0)) || fail "$OUTSIDE non-2xx answers outside the announced windows: $(field "$RESULTS/load.json" outside_examples)"
((UNVERIFIED == 0)) || fail "$UNVERIFIED of $CHECKED answers 200 do not verify against a sandbox ticket"
((load_rc == 0 || OUTSIDE > 0 || UNVERIFIED > 0)) || fail "the load generator failed (exit $load_rc): $(cat "$RESULTS/load.txt")"

calls() { python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], 0))' "$CALLS" "$1"; }
TOKEN_CALLS=$(($(calls token) + $(calls stable_token) + $(calls stable_token_force)))
TICKET_CALLS=$(calls getticket)
WINDOWS_ELAPSED=$(awk -v t="$T" -v p="$PERIOD" 'BEGIN { printf "%d", t / p }')
CALL_LIMIT=$((WINDOWS_ELAPSED + 1 + 1))
((TICKET_CALLS <= CALL_LIMIT)) || fail "$TICKET_CALLS ticket calls > $CALL_LIMIT"
((TOKEN_CALLS <= CALL_LIMIT)) || fail "$TOKEN_CALLS token calls > $CALL_LIMIT"

RSS_LINES=()
for i in 1 2 3; do
  s=${RSS_START[$i]} e=${RSS_END[$i]}
  bound=$(awk -v s="$s" -v mb="$RSS_GROWTH_MB" -v pct="$RSS_GROWTH_PCT" 'BEGIN {
    a = mb * 1024; b = s * pct / 100; printf "%d", (a > b ? a : b) }')
  RSS_LINES+=("$(awk -v i="$i" -v s="$s" -v e="$e" -v b="$bound" 'BEGIN {
    printf "instance-%d: %.1f -> %.1f MB (%+.1f MB, %+.1f %%; limit +%.1f MB)", i, s / 1024, e / 1024, (e - s) / 1024, (e - s) * 100 / s, b / 1024 }')")
  ((e - s <= bound)) || fail "instance-$i RSS grew from $s kB to $e kB (limit +$bound kB)"
done

cat <<EOF

wx-jssdk soak: ${DURATION}s of load at ${RATE} requests/s (nginx + 3 instances directly), EXPIRES_IN=${EXPIRES_IN}s, token_mode=$WXJSSDK__WECHAT__TOKEN_MODE, $(basename "$WXJSSDK_BIN") $(nproc) CPUs
requests: $TOTAL (by target and status: $BY_TARGET)
non-2xx or no answer, inside the announced windows: $INSIDE
non-2xx or no answer, outside them: $OUTSIDE (limit 0)
answers 200 verified against the sandbox's tickets: $((CHECKED - UNVERIFIED)) / $CHECKED ($TICKETS_SEEN tickets seen)
upstream calls over ${T}s = $WINDOWS_ELAPSED renewal periods of ${PERIOD}s: token $TOKEN_CALLS, ticket $TICKET_CALLS (limit each: floor(T/P) + 1 first fetch + 1 after the Redis restart = $CALL_LIMIT)
  sandbox counts: $CALLS
RSS (VmRSS, after ${WARMUP}s warm-up -> end; instance-2 from its restart's warm-up):
$(printf '  %s\n' "${RSS_LINES[@]}")
details: $RESULTS; stack logs: $STACK_DIR/logs
EOF

if ((${#FAILURES[@]})); then
  printf 'soak: FAILED: %s\n' "${FAILURES[@]}" >&2
  exit 1
fi
echo "soak: OK"
