#!/usr/bin/env bash
# Runs the fuzz targets, each for a bounded time, and prints how many
# inputs each executed (libFuzzer's final stats) and the total.
#
#   fuzz/run.sh                 every target, $FUZZ_SECONDS (default 60) each
#   fuzz/run.sh parquet 600     one target for 600 seconds
#   fuzz/run.sh all 300         every target, 300 seconds each
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's
# -Z flags. No sanitizer (-s none): our crates forbid unsafe code, and
# libFuzzer's coverage (-Cpasses=sancov-module) works without one; set
# FUZZ_SANITIZER=address to build with ASan instead (a separate build).
# Debug assertions are on (-a), so an arithmetic overflow is a finding, as
# it is in the unit tests. Builds nice'd into fuzz/target, with
# CARGO_BUILD_JOBS (default 1) jobs. Exits 1 if a target found a crash,
# leak, timeout or out-of-memory; the input is in fuzz/artifacts/<target>/.
#
# Corpora: fuzz/corpus/<target> (seeds from a real capture, fuzz/seeds.sh)
# and fuzz/regressions/<target> (every input that once failed) are read;
# what a run discovers goes to fuzz/target/corpus/<target>, kept between
# runs but not in git.
set -euo pipefail

fuzz=$(cd "$(dirname "$0")" && pwd)
targets=(pgtext pgoutput manifest schema control parquet config destinations transforms)
which=${1:-all}
seconds=${2:-${FUZZ_SECONDS:-60}}
sanitizer=${FUZZ_SANITIZER:-none}
if [[ $which != all ]]; then
    [[ " ${targets[*]} " == *" $which "* ]] || { echo "unknown target $which; one of: ${targets[*]}" >&2; exit 2; }
    targets=("$which")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    nice -n 10 cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
fuzz_args=(-s "$sanitizer" -a --fuzz-dir "$fuzz")
if [[ $which == all ]]; then
    nice -n 10 cargo fuzz build "${fuzz_args[@]}"
else
    nice -n 10 cargo fuzz build "${fuzz_args[@]}" "$which"
fi

logs=$fuzz/target/logs
mkdir -p "$logs"
total=0
failed=()
printf '%-14s %8s %14s %10s\n' target seconds executions exec/s
for t in "${targets[@]}"; do
    work=$fuzz/target/corpus/$t
    mkdir -p "$work" "$fuzz/regressions/$t" "$fuzz/artifacts/$t"
    status=0
    nice -n 10 cargo fuzz run "${fuzz_args[@]}" "$t" "$work" "$fuzz/corpus/$t" "$fuzz/regressions/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -print_final_stats=1 -artifact_prefix="$fuzz/artifacts/$t/" >"$logs/$t.log" 2>&1 || status=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    total=$((total + runs))
    printf '%-14s %8s %14s %10s\n' "$t" "$seconds" "$runs" "$rate"
    if [[ $status != 0 ]]; then
        failed+=("$t")
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$logs/$t.log" | head -5 | sed 's/^/    /'
    fi
done
printf '%-14s %8s %14s\n' total "" "$total"
if ((${#failed[@]})); then
    echo "failed: ${failed[*]} (logs in $logs, inputs in $fuzz/artifacts/)" >&2
    exit 1
fi
