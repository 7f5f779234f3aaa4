#!/usr/bin/env bash
# Fuzzes every target for SECONDS_PER_TARGET seconds (default 60), one after the other.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]
#
# Exits non-zero as soon as a target crashes (panic, failed assertion, overflow, out of
# memory, timeout), after printing the input that did it: replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --debug-assertions TARGET INPUT
# from fuzz/, and turn it into a unit test next to the code it broke.
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# No sanitizer by default: the code under test is safe Rust, and without ASan a target
# runs several times faster (FUZZ_SANITIZER=address turns it on). Debug assertions are
# on, so that arithmetic overflow is a crash, not a silent wrap.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2; }
sanitizer=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked
fi

flags=(--sanitizer "$sanitizer" --debug-assertions)
targets=$(cargo fuzz list)
echo "== building: $(echo "$targets" | tr '\n' ' ')"
cargo fuzz build "${flags[@]}"

for target in $targets; do
  # The run grows its corpus under target/ (git ignores it) and reads the committed
  # seeds from corpus/ without writing there.
  work=target/corpus/$target
  mkdir -p "$work" "artifacts/$target"
  echo "== $target: ${seconds}s"
  start=$SECONDS
  set +e
  cargo fuzz run "${flags[@]}" "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    2>&1 | tee "target/$target.log" |
    grep -E '^(#[0-9]+.*DONE|Done [0-9]+ runs|stat::number_of_executed_units|==[0-9]+== ERROR|thread .* panicked|SUMMARY|Test unit written)'
  status=${PIPESTATUS[0]}
  set -e
  if ((status != 0)); then
    echo "!! $target failed (exit $status) after $((SECONDS - start))s; full log: fuzz/target/$target.log" >&2
    crash=$(grep -o 'Test unit written to [^ ]*' "target/$target.log" | tail -1 | sed 's/Test unit written to //')
    [[ -n $crash ]] && echo "!! crash input: $crash (relative paths are relative to fuzz/)" >&2
    exit 1
  fi
done
echo "== all targets ran ${seconds}s without a crash"
