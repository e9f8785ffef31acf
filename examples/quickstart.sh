#!/usr/bin/env bash
# berth's quick start, on the embedded default (a local directory
# repository, SQLite state, an unprivileged --root): builds both programs,
# packs the example web application with its health hook, publishes it to
# staging, installs it on a node, ships a second build, rolls back, and
# promotes the same bytes to production. Everything lands under
# target/quickstart/ (or $BERTH_DEMO).
set -euo pipefail
cd "$(dirname "$0")/.."

# BERTH_BIN: a directory holding packager and agent already built (the
# test suite runs this script that way).
if [ -z "${BERTH_BIN:-}" ]; then
    cargo build --quiet --locked -p packager -p agent
    BERTH_BIN=$PWD/target/debug
fi
export PATH="$BERTH_BIN:$PATH"
demo=${BERTH_DEMO:-$PWD/target/quickstart}
rm -rf "$demo"
mkdir -p "$demo"
repo=$demo/repo
# The node: every path under this root, so nothing needs root privileges.
export BERTH_ROOT=$demo/node

step() { printf '\n$ %s\n' "$*"; "$@"; }

# CI gives the build number (Jenkins: BUILD_NUMBER); here it is 1, then 2.
step packager build examples/webapp --build 1 --out "$demo/out"
step packager verify "$demo/out/webapp_1.4.2+1.tar.zst"
step packager publish "$demo/out/webapp_1.4.2+1.tar.zst" --repo "$repo" --channel staging
# A CI re-run publishes nothing new.
step packager publish "$demo/out/webapp_1.4.2+1.tar.zst" --repo "$repo" --channel staging

# A node following staging installs it; the health hook runs after the switch.
step agent --repo "$repo" --channel staging install webapp
step agent --repo "$repo" --channel staging install webapp
step packager build examples/webapp --build 2 --out "$demo/out"
step packager publish "$demo/out/webapp_1.4.2+2.tar.zst" --repo "$repo" --channel staging
step agent --repo "$repo" --channel staging install webapp
step agent snapshots webapp
# Back to build 1 in one command: its release dir was kept, so it is a
# symlink flip.
step agent rollback webapp
step agent status webapp

# production is promote-only in a new repository: the tested bytes move on.
step packager promote webapp@1.4.2+1 --from staging --to production --repo "$repo"
step packager list --repo "$repo"
step agent history webapp
printf '\nthe node root: %s (target: %s)\n' "$BERTH_ROOT" "$(readlink "$BERTH_ROOT/srv/webapp")"
