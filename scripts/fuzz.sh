#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time, one after another, and prints the
# executions each made. Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      default: 300 s, all four targets
#
# Each target starts from the tracked seeds in fuzz/seeds/<target>/ and keeps what it learns in
# fuzz/corpus/<target>/ (ignored by git). A crash, panic, timeout or oversized allocation stops
# that target, leaves the input in fuzz/artifacts/<target>/, and makes the script exit non-zero
# after the remaining targets have run; minimise it (`cargo +nightly fuzz tmin <target> <file>`),
# fix the reader, and copy it to tests/fuzz-regressions/<target>/ so the stable test
# tests/fuzz_regressions.rs replays it in CI. Environment: FUZZ_ARGS (extra libFuzzer flags,
# e.g. -runs=100000 for a fixed number of executions), FUZZ_TOOLCHAIN (default nightly).
set -euo pipefail

secs="${1:-300}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(idx idx_gz cifar safetensors)
fi
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz on the $toolchain toolchain is missing: rustup toolchain install $toolchain && cargo install cargo-fuzz" >&2
    exit 2
fi

# No sanitizer: the readers are safe Rust over safe dependencies (miniz_oxide, serde_json,
# safetensors), so ASan would only slow the search; debug assertions and overflow checks stay on
# (cargo-fuzz's default), so an arithmetic overflow is a crash.
cargo "+$toolchain" fuzz build --sanitizer none

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t/run.log"
    echo "== $t: ${secs}s"
    dict=()
    case "$t" in
        idx | idx_gz) dict=(-dict=fuzz/dicts/idx.dict) ;;
        safetensors) dict=(-dict=fuzz/dicts/safetensors.dict) ;;
    esac
    set +e
    # -timeout: one input taking 10 s is a hang; -malloc_limit_mb: a single allocation over
    # 256 MiB from inputs of a few KiB is a header the reader believed; -rss_limit_mb: the whole
    # process. -print_final_stats prints stat::number_of_executed_units, read below.
    # shellcheck disable=SC2086
    cargo "+$toolchain" fuzz run --sanitizer none "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -print_final_stats=1 ${dict[@]+"${dict[@]}"} ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        tail -n 30 "$log"
    fi
    summary+=("$t: rc=$rc executions=$execs corpus=$(find "fuzz/corpus/$t" -type f | wc -l) log=$log")
done

echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "failing targets: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
