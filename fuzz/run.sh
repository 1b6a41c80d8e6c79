#!/usr/bin/env bash
# Runs both fuzz targets for SECONDS each (default 60) on the committed
# corpus. Needs cargo-fuzz (`cargo install cargo-fuzz`); the stable
# toolchain is used with RUSTC_BOOTSTRAP=1 for libFuzzer's flags.
# A crash leaves its input in fuzz/artifacts/ and fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for target in token request; do
    mkdir -p "fuzz/corpus/$target"
    rm -rf "fuzz/artifacts/$target" # only this run's findings count
    cargo fuzz run -O "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 2>&1 \
        | grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|ERROR|SUMMARY" || true
    if [ -n "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ]; then
        echo "fuzz target $target found a crash: fuzz/artifacts/$target" >&2
        exit 1
    fi
done
echo "fuzzing: no crash in ${seconds}s per target"
