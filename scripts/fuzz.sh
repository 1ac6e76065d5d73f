#!/usr/bin/env bash
# Runs each fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a bounded time, one at a time,
# at the lowest CPU priority, and prints what each run did.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Defaults: 600 s per target, every target. The corpus grows in fuzz/corpus/TARGET (seeded
# from fuzz/seeds/TARGET); a crash stops that target's run and leaves its input in
# fuzz/artifacts/TARGET/, to be turned into a regression test. Exits non-zero if any did.
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer, coverage instrumentation);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(manifest scalars patch apply selector a2a_message strategic protobuf)
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
nice -n 19 cargo fuzz build >&2

mkdir -p logs
failed=0
printf '%-12s %10s %10s %8s %8s %7s %s\n' target seconds executions corpus coverage crashes log
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="logs/$t.log"
    # -timeout: an input taking 10 s is a hang, reported like a crash; -rss_limit_mb likewise
    # for memory. One job, so the machine's other work keeps its cores.
    if ! nice -n 19 cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        failed=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || echo "?")
    corpus=$(find "corpus/$t" -type f | wc -l)
    crashes=$(find "artifacts/$t" -type f | wc -l)
    printf '%-12s %10s %10s %8s %8s %7s %s\n' "$t" "$secs" "$execs" "$corpus" "$cov" "$crashes" "fuzz/$log"
done
exit "$failed"
