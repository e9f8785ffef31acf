#!/usr/bin/env bash
# bench/install.sh: how fast and how lean `agent install` is, next to
# `zstd -dc A | tar -x` followed by `sync`, and to `dpkg -i` of a .deb
# holding the same files; how long a rollback to a kept release takes; and
# what the snapshot of an unmodified release costs.
#
# It builds the release packager and agent (or uses PACKAGER=... and
# AGENT=...), generates the tree of bench/build.sh with bench/gen_tree.py
# (seeded; about 20,000 files and 300 MB), packs it twice with
# `packager build` (builds 1 and 2 of package `bench-webapp`, target
# /srv/bench-webapp: two releases of the same size) and once as a .deb
# holding the same files under /srv/bench-webapp (`dpkg-deb -Zzstd
# --build`). Then:
#
# 1. Installs, ROUNDS times, alternating, each into a fresh directory:
#    (a) `agent --root R install --file A1` (a first install: no snapshot),
#    (b) `sh -c 'zstd -dc A1 | tar -x -C D && sync'`,
#    (c) `dpkg --root=D --admindir=D/var/lib/dpkg -i bench.deb`, on an empty
#        dpkg database in D (never the machine's own; checked), with
#        `--refuse-unsafe-io`: dpkg's default, fsync before every rename,
#        which a container's dpkg.cfg.d may have turned off.
#    Each is timed with GNU time (peak RSS) and the shell's EPOCHREALTIME
#    (wall, in ms).
#    Page cache: WARM for all three. The inputs (two artifacts and the .deb)
#    are read once before the first round, and `sync` runs before every
#    timed command so none inherits another's dirty pages. Dropping caches
#    (`echo 3 > /proc/sys/vm/drop_caches`) needs root, may be refused in a
#    container, and on a shared machine evicts other jobs' pages too; a warm
#    cache is the same for all three and is what a node sees right after
#    fetching an artifact. Every command writes its tree to disk: the agent
#    and dpkg fsync each file, tar's `sync` flushes everything at the end.
# 2. Snapshot of an unmodified release, ROUNDS times on a fresh root with
#    release 1 installed (not timed): `agent install --file A2`, timed; the
#    snapshot must be an artifact reference (`agent snapshots --json`). Its
#    cost is the `snapshot` step's duration from the state database
#    (`steps.finished_at - started_at`, ms, docs/state.md; `agent history
#    --json` has no per-step times), as a share of the whole install's wall
#    time. As a cross-check, the difference of the medians of this install
#    and of a first install (1a) is printed too; it also holds the rest of
#    what replacing costs (comparing, removing nothing, pruning).
# 3. Rollback to a kept release: on the last root of 2 (release 2 current,
#    release 1 kept), `agent rollback bench-webapp` RB_ROUNDS times, which
#    goes 2 -> 1 -> 2 -> ... (each rollback rolls back the previous one);
#    the link is checked after each.
# 4. Prints every round, the medians, the step times of the agent's
#    transactions (where its time goes), the ratios agent/tar+sync and
#    agent/dpkg, and PASS/FAIL against the goals: rollback under 50 ms,
#    snapshot under 5% of the install, agent peak RSS under 100 MB (the
#    largest of every agent command run). There is no time goal for the
#    install itself: the two baselines are for comparison.
#
# Run:   bash bench/install.sh             (as root on Debian: dpkg --root)
# Quick: FILES=2000 MB=30 ROUNDS=1 bash bench/install.sh
#
# Environment:
#   FILES      files in the tree (default 20000)
#   MB         payload size in MiB (default 300)
#   SEED       generator seed (default 1)
#   ROUNDS     alternating rounds of each install (default 3)
#   RB_ROUNDS  rollbacks timed (default 10)
#   PACKAGER   a packager binary to use instead of building one
#   AGENT      an agent binary to use instead of building one
#   KEEP=1     keep the tree, the artifacts and the last roots
#   TMPDIR     where everything goes (default /tmp; needs about 2 GB)
#
# Needs zstd, tar, python3, dpkg, dpkg-deb, sqlite3 (for the step times;
# without it only the cross-check is given) and GNU time; as root on Debian
# it installs the `time` package when /usr/bin/time is missing.
#
# Exit status is 0 when the measurements were made, whatever PASS/FAIL
# says: timings on a shared machine are not a test.
set -euo pipefail

FILES=${FILES:-20000}
MB=${MB:-300}
SEED=${SEED:-1}
ROUNDS=${ROUNDS:-3}
RB_ROUNDS=${RB_ROUNDS:-10}
KEEP=${KEEP:-0}
PACKAGER=${PACKAGER:-}
AGENT=${AGENT:-}
PKG=bench-webapp

me=bench/install.sh
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require tar zstd python3 dpkg dpkg-deb sync
have_sqlite=0
command -v sqlite3 >/dev/null && have_sqlite=1
require_gnu_time
[ "$(id -u)" = 0 ] || die "run it as root: \`dpkg --root\` installs files owned by root"

if [ -z "$PACKAGER" ] || [ -z "$AGENT" ]; then
    echo "building the release packager and agent" >&2
    (cd "$repo" && cargo build --release --locked -q -p packager -p agent)
    target=${CARGO_TARGET_DIR:-$repo/target}/release
    PACKAGER=${PACKAGER:-$target/packager}
    AGENT=${AGENT:-$target/agent}
fi
[ -x "$PACKAGER" ] || die "no packager binary at $PACKAGER"
[ -x "$AGENT" ] || die "no agent binary at $AGENT"

make_work berth-bench-install

# The machine's own dpkg database must not change: remember its status.
real_status_sum=$(md5sum /var/lib/dpkg/status 2>/dev/null | cut -d' ' -f1 || true)

# --- inputs -----------------------------------------------------------------

tree=$work/tree
echo "generating $FILES files, $MB MiB (seed $SEED) in $tree" >&2
python3 "$here/gen_tree.py" "$tree" "$FILES" "$MB" "$SEED" >&2
cat >"$tree/package.toml" <<EOF
[package]
name = "$PKG"
version = "1.0.0"
payload = "dist"

[install]
target = "/srv/$PKG"
EOF
files=$(find "$tree/dist" -type f | wc -l)
entries=$(find "$tree/dist" -mindepth 1 | wc -l)
payload=$(find "$tree/dist" -type f -printf '%s\n' | awk '{s += $1} END {print s}')

echo "packing builds 1 and 2" >&2
"$PACKAGER" build --build 1 --out "$work/out" "$tree" >/dev/null 2>"$work/err" ||
    { cat "$work/err" >&2; die "packager build failed"; }
"$PACKAGER" build --build 2 --out "$work/out" "$tree" >/dev/null 2>"$work/err" ||
    { cat "$work/err" >&2; die "packager build failed"; }
A1=$work/out/${PKG}_1.0.0+1.tar.zst
A2=$work/out/${PKG}_1.0.0+2.tar.zst
[ -f "$A1" ] && [ -f "$A2" ] || die "the artifacts are not where expected: $(ls "$work/out")"

echo "building the .deb" >&2
debdir=$work/deb
mkdir -p "$debdir/DEBIAN" "$debdir/srv"
cp -a "$tree/dist" "$debdir/srv/$PKG"
cat >"$debdir/DEBIAN/control" <<EOF
Package: $PKG
Version: 1.0.0-1
Architecture: all
Maintainer: berth benchmark <bench@example.invalid>
Description: berth install benchmark payload
EOF
DEB=$work/bench.deb
dpkg-deb -Zzstd --root-owner-group --build "$debdir" "$DEB" >/dev/null
rm -rf "$debdir"

# Warm the page cache with the inputs; every command reads them from it.
cat "$A1" "$A2" "$DEB" >/dev/null
# Nothing of the setup left to write back during the first timed command.
sync

# --- runners ----------------------------------------------------------------

times=$work/times
: >"$times"
now_ms() { echo "${EPOCHREALTIME/./}" | awk '{printf "%.3f", $1 / 1000}'; }

# timed NAME CMD...: wall ms (EPOCHREALTIME), peak RSS (GNU time, KiB);
# appends "NAME ms kib" to $times. The start time is left in $t0 for the
# step breakdown.
timed() {
    local name=$1
    shift
    sync
    t0=$(now_ms)
    if ! /usr/bin/time -f '%M' -o "$work/t" "$@" >"$work/out.log" 2>&1; then
        cat "$work/out.log" >&2
        die "$name failed: $*"
    fi
    t1=$(now_ms)
    echo "$name $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') $(tail -n1 "$work/t")" >>"$times"
}

state_db() { echo "$1/var/lib/berth/state.db"; }

# steps NAME ROOT: the steps of ROOT's newest transaction, in ms, as
# "step NAME before|STEP|after ms" lines: before = launch -> transaction
# start (lock, state db, copy and hash of the artifact into the cache),
# after = transaction end -> exit.
steps() {
    [ "$have_sqlite" = 1 ] || return 0
    local name=$1 db
    db=$(state_db "$2")
    sqlite3 -separator ' ' "$db" "
        WITH t AS (SELECT * FROM transactions ORDER BY id DESC LIMIT 1)
        SELECT 'txn', t.started_at, t.finished_at FROM t
        UNION ALL
        SELECT 'step ' || s.seq || ' ' || replace(s.name, ' ', '_'), s.started_at, s.finished_at
        FROM steps s, t WHERE s.txn_id = t.id" |
        awk -v name="$name" -v t0="$t0" -v t1="$t1" '
            $1 == "txn" { printf "step %s before %.1f\n", name, $2 - t0; after = t1 - $3; next }
            { printf "step %s %s %d\n", name, $3, $5 - $4 }
            END { printf "step %s after %.1f\n", name, after }' >>"$times"
}

check_tree() { # DIR: the payload is there, every file
    local got
    got=$(find "$1" -type f | wc -l)
    [ "$got" = "$files" ] || die "$1 holds $got files, not $files"
}

fresh_dpkg_root() {
    mkdir -p "$1/var/lib/dpkg/updates" "$1/var/lib/dpkg/info"
    : >"$1/var/lib/dpkg/status"
}

run_agent() {
    local r=$work/agent-root
    rm -rf "$r"
    mkdir -p "$r"
    timed agent "$AGENT" --root "$r" install --file "$A1"
    steps agent "$r"
    check_tree "$(readlink -f "$r/srv/$PKG")"
    rm -rf "$r"
}
run_tar() {
    local d=$work/tar-root
    rm -rf "$d"
    mkdir -p "$d"
    timed tar sh -c "zstd -dc '$A1' | tar -x -C '$d' && sync"
    check_tree "$d/files"
    rm -rf "$d"
}
run_dpkg() {
    local d=$work/dpkg-root
    rm -rf "$d"
    fresh_dpkg_root "$d"
    timed dpkg dpkg --root="$d" --admindir="$d/var/lib/dpkg" --log="$work/dpkg.log" \
        --refuse-unsafe-io -i "$DEB"
    check_tree "$d/srv/$PKG"
    grep -qx "Package: $PKG" "$d/var/lib/dpkg/status" || die "dpkg did not record $PKG in $d"
    rm -rf "$d"
}

for r in $(seq "$ROUNDS"); do
    echo "install round $r/$ROUNDS" >&2
    run_agent
    run_tar
    run_dpkg
done
sync

# --- snapshot of an unmodified release ---------------------------------------

snap_kinds=
for r in $(seq "$ROUNDS"); do
    echo "snapshot round $r/$ROUNDS" >&2
    root=$work/snap-root
    rm -rf "$root"
    mkdir -p "$root"
    "$AGENT" --root "$root" install --file "$A1" >/dev/null 2>&1 || die "install of A1 failed"
    timed over "$AGENT" --root "$root" install --file "$A2"
    steps over "$root"
    kind=$("$AGENT" --root "$root" snapshots "$PKG" --json |
        python3 -c 'import json, sys; s = json.load(sys.stdin); print(s[0]["kind"] if s else "none")')
    snap_kinds="$snap_kinds $kind"
    [ "$(readlink "$root/srv/$PKG")" = "$root/var/lib/berth/releases/$PKG/1.0.0+2/files" ] ||
        die "release 2 is not current after installing A2"
    if [ "$r" != "$ROUNDS" ]; then rm -rf "$root"; fi
done

# --- rollback to a kept release ------------------------------------------------

expect=1
for r in $(seq "$RB_ROUNDS"); do
    echo "rollback $r/$RB_ROUNDS" >&2
    timed rollback "$AGENT" --root "$root" rollback "$PKG"
    steps rollback "$root"
    [ "$(readlink "$root/srv/$PKG")" = "$root/var/lib/berth/releases/$PKG/1.0.0+$expect/files" ] ||
        die "rollback $r did not go to 1.0.0+$expect"
    expect=$((3 - expect))
done
[ "$KEEP" = 1 ] || rm -rf "$root"

# The machine's dpkg database is as it was.
[ "$(md5sum /var/lib/dpkg/status 2>/dev/null | cut -d' ' -f1 || true)" = "$real_status_sum" ] ||
    die "/var/lib/dpkg/status changed during the benchmark"
! grep -qx "Package: $PKG" /var/lib/dpkg/status 2>/dev/null ||
    die "$PKG is in the machine's own dpkg database"

# --- report -----------------------------------------------------------------

zstd_version=$(zstd --version | grep -o "v[0-9.]*" | head -n1 | tr -d v)
tar_version=$(tar --version | head -n1 | grep -o '[0-9.]*$')
dpkg_version=$(dpkg --version | head -n1 | grep -o 'version [0-9.]*' | cut -d' ' -f2)
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$repo" status --porcelain -- core agent packager 2>/dev/null)" ]; then
    commit="$commit+changes"
fi
fs=$(df -T "$work" | awk 'NR == 2 {print $2}')

awk -v files="$files" -v entries="$entries" -v payload="$payload" -v rounds="$ROUNDS" \
    -v seed="$SEED" -v a1s="$(stat -c %s "$A1")" -v debs="$(stat -c %s "$DEB")" \
    -v nproc="$(nproc)" -v cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    -v date="$(date -u '+%Y-%m-%d %H:%M UTC')" -v zv="$zstd_version" -v tv="$tar_version" \
    -v dv="$dpkg_version" -v fs="$fs" -v commit="$commit" -v kinds="$snap_kinds" \
    -v sqlite="$have_sqlite" '
function mb(kb) { return kb * 1024 / 1e6 }
function median(a, n,    i, j, t, b) {
    for (i = 1; i <= n; i++) b[i] = a[i]
    for (i = 2; i <= n; i++) for (j = i; j > 1 && b[j - 1] > b[j]; j--) { t = b[j]; b[j] = b[j - 1]; b[j - 1] = t }
    return n % 2 ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
}
function verdict(ok) { return ok ? "PASS" : "FAIL" }
$1 == "step" {
    # step NAME STEP MS, one line per step per run, in run order
    k = $2 SUBSEP $3
    if (!(k in sn)) { order[$2, ++norder[$2]] = $3 }
    sv[k, ++sn[k]] = $4
    next
}
{
    n[$1]++; t[$1, n[$1]] = $2; m[$1, n[$1]] = $3
    if ($3 > agent_max && ($1 == "agent" || $1 == "over" || $1 == "rollback")) agent_max = $3
}
END {
    printf "\nberth install benchmark, %s, agent %s\n", date, commit
    printf "machine: %d cores (nproc), %s; %s; zstd %s, GNU tar %s, dpkg %s\n", nproc, cpu, fs, zv, tv, dv
    printf "tree: %d files (%d entries), %.1f MB payload (seed %d); artifact %.1f MB, .deb %.1f MB\n", \
        files, entries, payload / 1e6, seed, a1s / 1e6, debs / 1e6
    printf "page cache warm for all (inputs read once first); sync before every timed command\n\n"

    printf "%-6s %12s %8s %12s %8s %12s %8s\n", "round", "agent (s)", "(MB)", "tar+sync (s)", "(MB)", "dpkg (s)", "(MB)"
    for (i = 1; i <= n["agent"]; i++)
        printf "%-6d %12.2f %8.1f %12.2f %8.1f %12.2f %8.1f\n", i, t["agent", i] / 1000, mb(m["agent", i]), \
            t["tar", i] / 1000, mb(m["tar", i]), t["dpkg", i] / 1000, mb(m["dpkg", i])

    for (c in n) { for (i = 1; i <= n[c]; i++) { tt[i] = t[c, i]; mm[i] = m[c, i] } mt[c] = median(tt, n[c]); mr[c] = median(mm, n[c]) }
    printf "\nmedians of %d alternating rounds            %10s %15s\n", rounds, "time (s)", "peak RSS (MB)"
    printf "%-42s %10.2f %15.1f\n", "agent install --file A (first install)", mt["agent"] / 1000, mb(mr["agent"])
    printf "%-42s %10.2f %15.1f\n", "zstd -dc A | tar -x; sync (*)", mt["tar"] / 1000, mb(mr["tar"])
    printf "%-42s %10.2f %15.1f\n", "dpkg -i (zstd .deb, fsync per file) (*)", mt["dpkg"] / 1000, mb(mr["dpkg"])
    printf "%-42s %10.2f %15.2f\n", "ratio agent/tar+sync", mt["agent"] / mt["tar"], mr["agent"] / mr["tar"]
    printf "%-42s %10.2f %15.2f\n", "ratio agent/dpkg", mt["agent"] / mt["dpkg"], mr["agent"] / mr["dpkg"]
    printf "%-42s %10.2f %15.1f\n", "agent install A2 over A1 (snapshot)", mt["over"] / 1000, mb(mr["over"])
    printf "(*) GNU time reports the largest process (zstd, tar, sync; dpkg, dpkg-deb), not their sum\n"

    if (sqlite) {
        printf "\nwhere the agent'"'"'s time goes: median ms per step (state db)\n"
        for (c = 1; c <= 3; c++) {
            name = c == 1 ? "agent" : c == 2 ? "over" : "rollback"
            label = c == 1 ? "first install" : c == 2 ? "install over" : "rollback"
            line = sprintf("%-14s (%2d) ", label, n[name])
            for (j = 1; j <= norder[name]; j++) {
                s = order[name, j]; k = name SUBSEP s
                for (i = 1; i <= sn[k]; i++) vv[i] = sv[k, i]
                line = line sprintf("  %s %.0f", s, median(vv, sn[k]))
            }
            printf "%s\n", line
        }
        printf "(before: launch to transaction start: lock, state db, artifact copied+hashed into the cache;\n"
        printf " after: transaction end to exit)\n"
        k = "over" SUBSEP "snapshot"
        for (i = 1; i <= sn[k]; i++) share[i] = sv[k, i] / t["over", i]
        for (i = 1; i <= sn[k]; i++) vv[i] = sv[k, i]
        snap_ms = median(vv, sn[k]); snap_share = median(share, sn[k])
    }
    diff_ms = mt["over"] - mt["agent"]

    for (i = 1; i <= n["rollback"]; i++) rb[i] = t["rollback", i]
    printf "\nrollbacks to a kept release (ms):"
    for (i = 1; i <= n["rollback"]; i++) printf " %.0f", rb[i]
    printf "\n"
    rb_med = median(rb, n["rollback"])
    printf "snapshot kinds of A2 over A1:%s\n", kinds
    printf "snapshot cost, install over minus first install (medians): %.0f ms, %.1f%% of the install\n\n", \
        diff_ms, 100 * diff_ms / mt["over"]

    printf "goal  rollback < 50 ms (median of %d)   %7.1f ms  %s\n", n["rollback"], rb_med, verdict(rb_med < 50)
    if (sqlite)
        printf "goal  snapshot < 5%% of the install      %6.1f%%    %s   (snapshot step %.0f ms of %.2f s)\n", \
            100 * snap_share, verdict(snap_share < 0.05), snap_ms, mt["over"] / 1000
    else
        printf "goal  snapshot < 5%% of the install      %6.1f%%    %s   (difference of medians; no sqlite3)\n", \
            100 * diff_ms / mt["over"], verdict(diff_ms / mt["over"] < 0.05)
    printf "goal  agent peak RSS < 100 MB          %7.1f MB  %s   (largest of all agent runs)\n", mb(agent_max), verdict(mb(agent_max) < 100)
    allref = 1; nk = split(kinds, kk, " "); for (i = 1; i <= nk; i++) if (kk[i] != "artifact-ref") allref = 0
    printf "check the snapshot of release 1 is an artifact reference: %s\n", allref && nk ? "yes" : "NO"
    printf "check every install put all %d files in place (agent, tar, dpkg): yes\n", files
    printf "check the machine'"'"'s dpkg database was not touched: yes\n"
}' "$times"
