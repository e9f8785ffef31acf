#!/usr/bin/env bash
# bench/http.sh: the agent installing from a repository served over HTTP by
# nginx on loopback.
#
# It builds the release packager and agent (or uses PACKAGER=... and
# AGENT=...), generates a tree with bench/gen_tree.py, packs it with
# `packager build` (package `bench-webapp`, target /srv/bench-webapp),
# publishes it into a signed repository (`packager keygen`; the agents
# trust the public key) and serves the repository with Debian's nginx on
# 127.0.0.1 (a free port; its config, logs and temp paths in the work dir;
# stopped at exit). Then:
#
# 1. One install, ROUNDS times, alternating, each into a fresh directory:
#    (a) `agent --root R --repo http://... --channel staging install
#        bench-webapp` (resolve, a signed index, the download into the
#        cache with its digest checked, unpack with every file checked and
#        fsynced, hooks none, the switch),
#    (b) `sh -c 'curl -s URL | zstd -dc | tar -x -C D && sync'` of the same
#        artifact's URL.
#    Wall time from the shell's EPOCHREALTIME; the ratio agent/(b) of the
#    medians.
# 2. A fleet: FLEET agents (default 50) with separate roots installing the
#    same release at once from the one nginx (a smaller tree, FLEET_FILES
#    and FLEET_MB, so that FLEET unpacked copies fit on the disk): the
#    total wall time from the first start to the last exit, and from
#    nginx's access log what the server sent: requests and bytes for the
#    artifact (each node fetches it once), for the indexes, signatures and
#    repo.toml. Then every agent polls again (`agent install` once more,
#    each answers `unchanged`): the indexes must come back 304 Not
#    Modified from nginx (conditional GET with the ETag each node kept) and
#    no artifact byte is sent again.
#
# Run:   bash bench/http.sh
# Quick: FILES=2000 MB=30 ROUNDS=1 FLEET=10 bash bench/http.sh
#
# Environment:
#   FILES, MB     the tree of part 1 (default 5000 files, 100 MiB)
#   FLEET_FILES, FLEET_MB   the tree of part 2 (default 500 files, 8 MiB)
#   FLEET         agents at once in part 2 (default 50)
#   SEED          generator seed (default 1)
#   ROUNDS        alternating rounds of part 1 (default 3)
#   PACKAGER, AGENT   binaries to use instead of building them
#   KEEP=1        keep the work dir
#   TMPDIR        where everything goes (default /tmp; needs about
#                 3 x MB + FLEET x 2 x FLEET_MB)
#
# Needs nginx (Debian's package, /usr/sbin/nginx), curl, zstd, tar,
# python3. Exit status 0 when the measurements were made; the checks (each
# node fetched the artifact once, the re-polls were answered 304 and sent
# no artifact) fail it: those are facts, not timings.
set -euo pipefail

FILES=${FILES:-5000}
MB=${MB:-100}
FLEET_FILES=${FLEET_FILES:-500}
FLEET_MB=${FLEET_MB:-8}
FLEET=${FLEET:-50}
SEED=${SEED:-1}
ROUNDS=${ROUNDS:-3}
KEEP=${KEEP:-0}
PACKAGER=${PACKAGER:-}
AGENT=${AGENT:-}
PKG=bench-webapp
NGINX=${NGINX:-/usr/sbin/nginx}

me=bench/http.sh
# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require tar zstd python3 curl sync
[ -x "$NGINX" ] || die "nginx is required at $NGINX (Debian: apt-get install nginx)"

if [ -z "$PACKAGER" ] || [ -z "$AGENT" ]; then
    echo "building the release packager and agent" >&2
    (cd "$repo" && cargo build --release --locked -q -p packager -p agent)
    target=${CARGO_TARGET_DIR:-$repo/target}/release
    PACKAGER=${PACKAGER:-$target/packager}
    AGENT=${AGENT:-$target/agent}
fi
[ -x "$PACKAGER" ] || die "no packager binary at $PACKAGER"
[ -x "$AGENT" ] || die "no agent binary at $AGENT"

make_work berth-bench-http
nginx_pid=
# The work dir's trap from make_work, with nginx stopped first.
trap 'if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; fi
      if [ "${KEEP:-0}" = 1 ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi' EXIT

now_ms() { echo "${EPOCHREALTIME/./}" | awk '{printf "%.3f", $1 / 1000}'; }
median() { sort -n | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# --- the repository -----------------------------------------------------------

srv=$work/repo
(cd "$work" && "$PACKAGER" keygen --out "$work/ci" --unencrypted >/dev/null)
export BERTH_SIGN_KEY=$work/ci.key

# make_release NAME FILES MB: a tree, packed, published to staging; sets
# `artifact` and `sha`.
make_release() {
    local name=$1 files=$2 mb=$3 app=$work/$1
    echo "generating $name: $files files, $mb MiB" >&2
    python3 "$here/gen_tree.py" "$app" "$files" "$mb" "$SEED" >/dev/null
    sed -i "s/^name = .*/name = \"$name\"/; s|^target = .*|target = \"/srv/$name\"|" "$app/package.toml"
    (cd "$work" && "$PACKAGER" build "$app" --build 1 --out "$work/out" >/dev/null 2>&1) ||
        die "packager build of $name failed"
    artifact=$(ls "$work"/out/"$name"_*.tar.zst)
    (cd "$work" && "$PACKAGER" publish "$artifact" --repo "$srv" --channel staging >/dev/null 2>&1) ||
        die "packager publish of $name failed"
    sha=$(sha256sum "$artifact" | cut -d' ' -f1)
}
make_release "$PKG" "$FILES" "$MB"
big_sha=$sha
big_size=$(stat -c %s "$artifact")
files=$(find "$work/$PKG/dist" -type f | wc -l)
make_release "$PKG-fleet" "$FLEET_FILES" "$FLEET_MB"
fleet_size=$(stat -c %s "$artifact")

# --- nginx ---------------------------------------------------------------------

ngx=$work/nginx
mkdir -p "$ngx/tmp"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$ngx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $ngx/nginx.pid;
error_log $ngx/error.log;
events { worker_connections 4096; }
http {
    types { application/json json; }
    default_type application/octet-stream;
    sendfile on;
    log_format berth '\$request_method \$uri \$status \$body_bytes_sent';
    access_log $ngx/access.log berth;
    client_body_temp_path $ngx/tmp/body;
    proxy_temp_path $ngx/tmp/proxy;
    fastcgi_temp_path $ngx/tmp/fastcgi;
    uwsgi_temp_path $ngx/tmp/uwsgi;
    scgi_temp_path $ngx/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        location / { root $srv; }
    }
}
EOF
"$NGINX" -p "$ngx" -c "$ngx/nginx.conf" -e "$ngx/error.log" </dev/null >/dev/null 2>&1 &
nginx_pid=$!
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/repo.toml" && break
    kill -0 "$nginx_pid" 2>/dev/null || die "nginx did not start: $(cat "$ngx/error.log")"
    sleep 0.05
done
url=http://127.0.0.1:$port
echo "nginx on $url (pid $nginx_pid)" >&2

agent_in() { # ROOT ARGS...
    local root=$1
    shift
    "$AGENT" --root "$root" --repo "$url" --channel staging --trusted-key "$work/ci.pub" "$@"
}

# --- 1. one install --------------------------------------------------------------

blob_url=$url/blobs/sha256/${big_sha:0:2}/$big_sha.tar.zst
times=$work/times
: >"$times"
cat "$srv"/blobs/sha256/*/*.tar.zst >/dev/null # the server reads from the page cache
for r in $(seq "$ROUNDS"); do
    echo "install round $r/$ROUNDS" >&2
    root=$work/agent-root
    rm -rf "$root"
    mkdir -p "$root"
    sync
    t0=$(now_ms)
    agent_in "$root" install "$PKG" >"$work/out.log" 2>&1 || { cat "$work/out.log" >&2; die "agent install failed"; }
    t1=$(now_ms)
    got=$(find "$(readlink -f "$root/srv/$PKG")" -type f | wc -l)
    [ "$got" = "$files" ] || die "the agent installed $got files, not $files"
    echo "agent $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')" >>"$times"
    rm -rf "$root"

    d=$work/tar-root
    rm -rf "$d"
    mkdir -p "$d"
    sync
    t0=$(now_ms)
    sh -c "curl -sf '$blob_url' | zstd -dc | tar -x -C '$d' && sync" || die "curl | zstd | tar failed"
    t1=$(now_ms)
    got=$(find "$d/files" -type f | wc -l)
    [ "$got" = "$files" ] || die "curl | tar unpacked $got files, not $files"
    echo "curl $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')" >>"$times"
    rm -rf "$d"
done

# --- 2. the fleet ----------------------------------------------------------------

: >"$ngx/access.log" # nginx appends to the same file
echo "fleet: $FLEET agents at once" >&2
fleet=$work/fleet
mkdir -p "$fleet"
sync
t0=$(now_ms)
pids=()
for i in $(seq "$FLEET"); do
    mkdir -p "$fleet/$i"
    agent_in "$fleet/$i" install "$PKG-fleet" >"$fleet/$i.log" 2>&1 &
    pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
t1=$(now_ms)
fleet_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", b - a}')
[ "$failed" = 0 ] || { cat "$fleet"/1.log >&2; die "$failed of $FLEET agents failed"; }
cp "$ngx/access.log" "$work/first.log"

: >"$ngx/access.log"
t0=$(now_ms)
pids=()
for i in $(seq "$FLEET"); do
    agent_in "$fleet/$i" install "$PKG-fleet" --json >"$fleet/$i.again" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "a re-poll failed: $(cat "$fleet"/*.again | head -20)"; done
t1=$(now_ms)
repoll_ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", b - a}')
unchanged=$(grep -l '"changed": *false' "$fleet"/*.again | wc -l)
cp "$ngx/access.log" "$work/again.log"

# summary LOG: requests, statuses and bytes by kind of object.
summary() {
    awk '
        { kind = "other" }
        $2 ~ /\/blobs\// { kind = "artifact" }
        $2 ~ /\.json$/ { kind = "index" }
        $2 ~ /\.minisig$/ { kind = "signature" }
        $2 ~ /repo\.toml$/ { kind = "repo.toml" }
        { n[kind]++; b[kind] += $4; s[kind " " $3]++ }
        END {
            for (k in n) {
                line = sprintf("  %-10s %4d requests %12d bytes  statuses:", k, n[k], b[k])
                for (ks in s) { split(ks, p, " "); if (p[1] == k) line = line " " p[2] "x" s[ks] }
                print line
            }
        }' "$1" | sort
}

# --- report --------------------------------------------------------------------------

agent_med=$(awk '$1 == "agent" {print $2}' "$times" | median)
curl_med=$(awk '$1 == "curl" {print $2}' "$times" | median)
echo
echo "== 1. one install over HTTP: $files files, artifact $big_size bytes"
awk '{printf "  %-6s %10.1f ms\n", $1, $2}' "$times"
echo "  median: agent $agent_med ms, curl | zstd -dc | tar -x && sync $curl_med ms, ratio $(awk -v a="$agent_med" -v b="$curl_med" 'BEGIN {printf "%.2f", a / b}')"
echo
echo "== 2. $FLEET agents at once, artifact $fleet_size bytes ($FLEET_FILES files)"
echo "  first install: $fleet_ms ms for all"
summary "$work/first.log"
blob_gets=$(awk '$2 ~ /\/blobs\// && $3 == 200' "$work/first.log" | wc -l)
blob_bytes=$(awk '$2 ~ /\/blobs\// {b += $4} END {print b + 0}' "$work/first.log")
echo "  re-poll: $repoll_ms ms for all, $unchanged of $FLEET unchanged"
summary "$work/again.log"
index_304=$(awk '$2 ~ /\.json$/ && $3 == 304' "$work/again.log" | wc -l)
index_all=$(awk '$2 ~ /\.json$/' "$work/again.log" | wc -l)
again_blob=$(awk '$2 ~ /\/blobs\// {b += $4} END {print b + 0}' "$work/again.log")
echo "  total sent by nginx: first $(awk '{b += $4} END {print b + 0}' "$work/first.log") bytes, re-poll $(awk '{b += $4} END {print b + 0}' "$work/again.log") bytes"

ok=1
check() { # CONDITION-TEXT RESULT
    if [ "$2" = 1 ]; then echo "  PASS $1"; else echo "  FAIL $1"; ok=0; fi
}
echo
echo "== checks"
check "each node fetched the artifact once ($blob_gets GETs of 200, $blob_bytes bytes = $FLEET x $fleet_size)" \
    "$([ "$blob_gets" = "$FLEET" ] && [ "$blob_bytes" = $((FLEET * fleet_size)) ] && echo 1 || echo 0)"
check "every re-poll's index answered 304 ($index_304 of $index_all)" \
    "$([ "$index_304" = "$index_all" ] && [ "$index_all" -ge "$FLEET" ] && echo 1 || echo 0)"
check "no artifact byte sent on re-poll ($again_blob)" "$([ "$again_blob" = 0 ] && echo 1 || echo 0)"
check "every re-poll unchanged ($unchanged of $FLEET)" "$([ "$unchanged" = "$FLEET" ] && echo 1 || echo 0)"
[ "$ok" = 1 ] || exit 1
