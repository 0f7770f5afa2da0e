#!/usr/bin/env bash
# CI's fuzz smoke: build every target once, then run each for a short bounded time from its seed corpus,
# failing on any crash, panic, leak or timeout. It finds shallow regressions only; run the targets long as
# docs/RELIABILITY.md ("Fuzzing") says.
#
#   fuzz/smoke.sh [seconds per target, default 20]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
cargo_fuzz_version=0.13.1

if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]]; then
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

# Before the variables below, which would make cargo rebuild the tests this reuses.
./seed.sh

# cargo-fuzz passes unstable flags (-Z sanitizer, sancov); the pinned stable toolchain accepts them this way
# and ships the AddressSanitizer runtime.
export RUSTC_BOOTSTRAP=1
# --dev: unoptimised, a much shorter build; runs are slower, which a smoke does not mind. Its own target dir,
# since the wrapper changes what is built.
build=(--dev --target-dir target/smoke)
export RUSTC_WRAPPER="$PWD/instrument-only.sh"

time cargo fuzz build "${build[@]}"

# Two targets at a time (two cores). -timeout: one input taking this long is a failure too.
cargo fuzz list | xargs -P 2 -I{} sh -c \
  'cargo fuzz run "$@" -- -max_total_time='"$secs"' -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
     > "target/smoke-$0.log" 2>&1 || { tail -n 60 "target/smoke-$0.log"; echo "fuzz target $0 failed" >&2; exit 255; }; \
   echo "fuzz target $0: $(grep -m1 -o "stat::number_of_executed_units: *[0-9]*" "target/smoke-$0.log")"' \
  {} "${build[@]}" {}
