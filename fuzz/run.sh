#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 300), one after the other, and
# prints per target the run time, the executions and what it found. Exits
# non-zero if any target found a crash, a memory blowup or a hang.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]     targets: manifest index artifact
#
# Needs the nightly toolchain (rustup) and cargo-fuzz, installed here when
# missing. Seeds are generated fresh into fuzz/target/seeds/; what the
# fuzzer learns stays in fuzz/corpus/<target>/, findings go to
# fuzz/artifacts/<target>/ and the logs to fuzz/runs/. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest index artifact)
[[ $seconds =~ ^[0-9]+$ ]] || {
    echo "error: SECONDS must be a whole number, not \`$seconds\`" >&2
    exit 2
}

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "error: cargo-fuzz needs the nightly toolchain" >&2
    echo "hint: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# The limits that make a finding of a memory blowup (-rss_limit_mb, and
# -malloc_limit_mb for a single allocation, which defaults to it) or a hang
# (-timeout, seconds per input); the input size limit per target.
common=(-rss_limit_mb=2048 -timeout=30 -print_final_stats=1)
declare -A max_len=([manifest]=16384 [index]=8192 [artifact]=65536)
# The unpacker's fsync threads can outlive a failed run by a moment, and then
# LeakSanitizer scans the whole heap after every input: a third of the time,
# for no finding (a leak is not what this target looks for).
declare -A extra=([manifest]= [index]= [artifact]=-detect_leaks=0)

# Debug assertions on (-a): integer overflow is a finding too.
cargo +nightly fuzz build -a
rm -rf target/seeds
cargo +nightly run -q -p berth-fuzz-seeds -- target/seeds

mkdir -p runs
failed=0
summary=()
for target in "${targets[@]}"; do
    [ -n "${max_len[$target]:-}" ] || {
        echo "error: unknown target \`$target\` (manifest, index, artifact)" >&2
        exit 2
    }
    mkdir -p "corpus/$target" "artifacts/$target"
    before=$(ls "artifacts/$target" | sort)
    log="runs/$target.log"
    echo "fuzzing $target for ${seconds}s (log: fuzz/$log)" >&2
    start=$(date +%s)
    status=0
    cargo +nightly fuzz run -a "$target" "corpus/$target" "target/seeds/$target" -- \
        "${common[@]}" -max_len="${max_len[$target]}" -max_total_time="$seconds" ${extra[$target]} \
        >"$log" 2>&1 || status=$?
    # libFuzzer's own figure when it got to the end, else the wall time.
    elapsed=$(grep -o '^Done [0-9]* runs in [0-9]* second' "$log" | grep -o '[0-9]* second' | grep -o '[0-9]*')
    [ -n "$elapsed" ] || elapsed=$(($(date +%s) - start))
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    new=$(comm -13 <(echo "$before") <(ls "artifacts/$target" | sort) | sed "s|^|fuzz/artifacts/$target/|")
    if [ "$status" -ne 0 ] || [ -n "$new" ]; then
        failed=1
        found="FOUND (exit $status): $(echo $new)"
        grep -m1 -E '^(==[0-9]+== ?ERROR|thread .* panicked)' "$log" >&2 || true
    else
        found="nothing"
    fi
    summary+=("$(printf '%-9s %6ss %12s execs  %s' "$target" "$elapsed" "${execs:-?}" "$found")")
done

printf '%-9s %7s %18s  %s\n' target time executions findings
printf '%s\n' "${summary[@]}"
exit $failed
