#!/usr/bin/env bash
# bench/build.sh: how fast and how lean `packager build` is, next to the
# plain `tar -cf - DIR | zstd -T0 -3` pipeline on the same tree.
#
# It builds the release packager (or uses PACKAGER=/path/to/packager),
# generates a deterministic tree with bench/gen_tree.py (seeded; about
# 20,000 files and 300 MB: many small compressible text files, some medium
# ones, a few large ones, about a sixth of the bytes random), warms the
# page cache so both commands read the same cached tree, then runs the two
# commands alternately ROUNDS times, timing each with GNU time (`%e %M`:
# wall seconds and peak RSS). It prints every round, the medians, the
# output sizes, the ratio packager/baseline and PASS/FAIL against the
# goals: time ratio <= 1.0 and packager peak RSS < 100 MB. The figures are
# only meaningful side by side in one run; see docs/benchmarks.md.
#
# Run:   bash bench/build.sh
# Quick: FILES=2000 MB=30 ROUNDS=1 bash bench/build.sh
#
# Environment:
#   FILES     files in the tree (default 20000)
#   MB        payload size in MiB (default 300)
#   SEED      generator seed (default 1)
#   ROUNDS    alternating rounds of each command (default 5)
#   PACKAGER  a packager binary to use instead of building one
#   KEEP=1    keep the generated tree and outputs (printed at the end)
#   TMPDIR    where the tree is generated (default /tmp)
#
# Exit status is 0 when the measurements were made, whatever PASS/FAIL
# says: timings on a shared machine are not a test.
set -euo pipefail

FILES=${FILES:-20000}
MB=${MB:-300}
SEED=${SEED:-1}
ROUNDS=${ROUNDS:-5}
KEEP=${KEEP:-0}
PACKAGER=${PACKAGER:-}

me=bench/build.sh
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require tar zstd python3
require_gnu_time

if [ -z "$PACKAGER" ]; then
    echo "building the release packager" >&2
    (cd "$repo" && cargo build --release --locked -q -p packager)
    PACKAGER=${CARGO_TARGET_DIR:-$repo/target}/release/packager
fi
[ -x "$PACKAGER" ] || die "no packager binary at $PACKAGER"

make_work berth-bench

tree=$work/tree
echo "generating $FILES files, $MB MiB (seed $SEED) in $tree" >&2
python3 "$here/gen_tree.py" "$tree" "$FILES" "$MB" "$SEED" >&2
files=$(find "$tree/dist" -type f | wc -l)
payload=$(find "$tree/dist" -type f -printf '%s\n' | awk '{s += $1} END {print s}')

# Warm the page cache: read every file once (not `tar -cf /dev/null`, which
# GNU tar short-cuts without reading the files).
find "$tree/dist" -type f -print0 | xargs -0 cat >/dev/null

base_out=$work/baseline.tar.zst
pk_out=$work/out
times=$work/times
: >"$times"

# `sh -c 'tar | zstd'`: GNU time reports the largest peak RSS of the shell
# and its children (tar, zstd), not their sum.
run_baseline() {
    rm -f "$base_out"
    (cd "$tree" && /usr/bin/time -f '%e %M' -o "$work/t" \
        sh -c "tar -cf - dist | zstd -T0 -3 -q -o '$base_out'")
    echo "baseline $(cat "$work/t")" >>"$times"
}
run_packager() {
    rm -rf "$pk_out"
    if ! /usr/bin/time -f '%e %M' -o "$work/t" \
        "$PACKAGER" build --build 1 --out "$pk_out" "$tree" >"$work/sha" 2>"$work/err"; then
        cat "$work/err" >&2
        die "packager build failed"
    fi
    echo "packager $(cat "$work/t")" >>"$times"
    cut -d' ' -f1 "$work/sha" >>"$work/shas"
}

for r in $(seq "$ROUNDS"); do
    echo "round $r/$ROUNDS" >&2
    run_baseline
    run_packager
done

pk_file=$(echo "$pk_out"/*.tar.zst)
first_entry=$(tar --zstd -tf "$pk_file" | sed -n 1p)
distinct_shas=$(sort -u "$work/shas" | wc -l)

zstd_version=$(zstd --version | grep -o "v[0-9.]*" | head -n1 | tr -d v)
tar_version=$(tar --version | head -n1 | grep -o '[0-9.]*$')
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$repo" status --porcelain -- core packager 2>/dev/null)" ]; then
    commit="$commit+changes"
fi

awk -v files="$files" -v payload="$payload" -v rounds="$ROUNDS" -v seed="$SEED" \
    -v bs="$(stat -c %s "$base_out")" -v ps="$(stat -c %s "$pk_file")" \
    -v nproc="$(nproc)" -v cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    -v date="$(date -u '+%Y-%m-%d %H:%M UTC')" -v zv="$zstd_version" -v tv="$tar_version" \
    -v commit="$commit" -v first="$first_entry" -v shas="$distinct_shas" '
function mb(kb) { return kb * 1024 / 1e6 }
function median(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
$1 == "baseline" { nb++; bt[nb] = $2; bm[nb] = $3; rbt[nb] = $2; rbm[nb] = $3 }
$1 == "packager" { np++; pt[np] = $2; pm[np] = $3; rpt[np] = $2; rpm[np] = $3 }
END {
    printf "\nberth build benchmark, %s, packager %s\n", date, commit
    printf "machine: %d cores (nproc), %s; zstd %s, GNU tar %s\n", nproc, cpu, zv, tv
    printf "tree: %d files, %.1f MB payload (seed %d)\n\n", files, payload / 1e6, seed
    printf "%-6s %14s %16s %14s %16s\n", "round", "baseline (s)", "baseline (MB)", "packager (s)", "packager (MB)"
    for (i = 1; i <= nb; i++)
        printf "%-6d %14.2f %16.1f %14.2f %16.1f\n", i, rbt[i], mb(rbm[i]), rpt[i], mb(rpm[i])
    t_b = median(bt, nb); m_b = median(bm, nb); t_p = median(pt, np); m_p = median(pm, np)
    printf "\nmedians of %d alternating rounds  %10s %15s %13s\n", rounds, "time (s)", "peak RSS (MB)", "output (MB)"
    printf "%-33s %10.2f %15.1f %13.1f\n", "tar -cf - DIR | zstd -T0 -3 (*)", t_b, mb(m_b), bs / 1e6
    printf "%-33s %10.2f %15.1f %13.1f\n", "packager build", t_p, mb(m_p), ps / 1e6
    printf "%-33s %10.2f %15.2f %13.3f\n", "ratio packager/baseline", t_p / t_b, m_p / m_b, ps / bs
    printf "(*) GNU time reports a pipeline'"'"'s largest process (tar, zstd), not their sum\n\n"
    printf "goal  time ratio <= 1.00           %6.2f     %s\n", t_p / t_b, t_p / t_b <= 1.0 ? "PASS" : "FAIL"
    printf "goal  packager peak RSS < 100 MB   %6.1f MB  %s\n", mb(m_p), mb(m_p) < 100 ? "PASS" : "FAIL"
    printf "check the first entry is MANIFEST.toml:      %s\n", first == "MANIFEST.toml" ? "yes" : "NO (" first ")"
    printf "check every round gave the same sha256:      %s\n", shas == 1 ? "yes" : "NO"
}' "$times"
