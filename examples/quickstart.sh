#!/usr/bin/env bash
# berth's quick start, on the embedded default (a local directory
# repository): builds the packager, packs the example web application with
# its health hook, publishes it to staging and promotes the same bytes to
# production. Everything lands under target/quickstart/ (or $BERTH_DEMO).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --locked -p packager
export PATH="$PWD/target/debug:$PATH"
demo=${BERTH_DEMO:-$PWD/target/quickstart}
rm -rf "$demo"
mkdir -p "$demo"
repo=$demo/repo

step() { printf '\n$ %s\n' "$*"; "$@"; }

# CI gives the build number (Jenkins: BUILD_NUMBER); here it is 1.
step packager build examples/webapp --build 1 --out "$demo/out"
step packager verify "$demo/out/webapp_1.4.2+1.tar.zst"
step packager publish "$demo/out/webapp_1.4.2+1.tar.zst" --repo "$repo" --channel staging
# A CI re-run publishes nothing new.
step packager publish "$demo/out/webapp_1.4.2+1.tar.zst" --repo "$repo" --channel staging
# production is promote-only in a new repository: the tested bytes move on.
step packager promote webapp@1.4.2+1 --from staging --to production --repo "$repo"
step packager list --repo "$repo"
step packager show webapp@1.4.2+1 --repo "$repo"
printf '\nthe repository is plain files: %s\n' "$repo"
(cd "$repo" && find . -type f | sort)
