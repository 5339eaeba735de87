#!/usr/bin/env bash
# CPU time of the --cp validator on 100 000 entries with 20 000 symbolic links (see
# bench/validate.rs). RUNS=N for more runs. Needs no engine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --locked --release --quiet -p didx --features internals --example validate_bench
