#!/usr/bin/env bash
# Fuzz each target for SECONDS (default 60) with cargo-fuzz on stable Rust (RUSTC_BOOTSTRAP=1
# lets cargo-fuzz pass its -Z flags; no sanitizer: the code under test is safe Rust, and
# without one it runs several times faster). Installs cargo-fuzz when absent. Inputs that
# crash are left in fuzz/artifacts/TARGET/; copy them to fuzz/regressions/TARGET/ so
# `cargo test` replays them (tests/fuzz_regressions.rs).
#   bash fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(archive options)
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
for t in "${targets[@]}"; do
  # Start from the committed regression corpus; new finds go to a scratch corpus dir.
  mkdir -p "corpus/$t"
  find "regressions/$t" -type f -exec cp -n {} "corpus/$t/" \;
  echo "fuzz: $t for ${secs}s"
  mkdir -p target
  set +e
  cargo fuzz run --sanitizer none "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=65536 >"target/fuzz-$t.log" 2>&1
  rc=$?
  set -e
  # libFuzzer's summary: coverage at start and end, runs done; the crash report if any.
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done [0-9]+ runs|ERROR|panicked|^artifact_prefix|Test unit written' "target/fuzz-$t.log" || true
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: $t FAILED (exit $rc); full log: fuzz/target/fuzz-$t.log" >&2
    failed=1
  fi
done
exit "${failed:-0}"
