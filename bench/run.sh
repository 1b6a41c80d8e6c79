#!/usr/bin/env bash
# Runs every benchmark scenario of issue 6 and writes bench/results.md and
# bench/results.svg. Extra arguments go to the harness (see --help), e.g.
#   bench/run.sh --duration 4 --rounds 2
# `bench/run.sh --soak 600` runs only the 10-minute soak of issue 10 and
# writes bench/soak.md instead. `--only algorithms` (repeatable) runs only
# the named scenarios, e.g. (j), get_caller per --jwt-alg (write such a
# partial run elsewhere with --out, not over bench/results.md).
# The harness raises its open-file soft limit to the hard limit itself; for
# --sessions above ~19,000, run `ulimit -n 65536` (as root) first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
export BENCH_COMMAND="bench/run.sh${*:+ $*}"
exec target/release/bench "$@"
