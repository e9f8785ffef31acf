#!/usr/bin/env bash
# berth's test command, the one README.md shows and .ci/run calls: installs
# what the tests need (Debian packages, as root, only when missing), then
# checks formatting and lints, builds the binaries and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Interop peers and tools the end-to-end tests run for real (the ready hooks'
# tests: curl, sqlite3, the PostgreSQL client and server, runuser; prlimit
# for the agent run under a memory cap; nginx serves repositories over HTTP,
# at /usr/sbin, which may not be on PATH).
declare -A package_of=(
    [tar]=tar [zstd]=zstd [git]=git [sha256sum]=coreutils [script]=bsdutils
    [mkfifo]=coreutils [python3]=python3 [curl]=curl [sqlite3]=sqlite3
    [psql]=postgresql-client [pg_dump]=postgresql-client
    [pg_restore]=postgresql-client [runuser]=util-linux [flock]=util-linux
    [prlimit]=util-linux
    [minisign]=minisign [openssl]=openssl
)
missing=()
for tool in "${!package_of[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
# The PostgreSQL server (initdb, pg_ctl) is not on PATH: Debian puts it in
# /usr/lib/postgresql/<version>/bin, where tests/e2e/hooks.rs looks for it.
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing: ${missing[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: the tests need ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install --locked cargo-nextest
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests drive the binaries cargo builds here.
cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --no-fail-fast
