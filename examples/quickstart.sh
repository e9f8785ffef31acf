#!/usr/bin/env bash
# berth's quick start, on the embedded default (a local directory
# repository, SQLite state, an unprivileged root), the whole story of a
# release line of the example web application and its SQLite database:
#
#   v1  1.4.2+1  published to staging, installed on a node, promoted to production
#   v2  1.5.0+2  a migration changes the data (data_epoch 2): dumped, switched, migrated
#   v3  1.6.0+3  fails its health check: rolled back to v2 automatically (exit 3)
#   then `agent rollback --to 1.4.2+1 --with-data`: v1's code and v1's data,
#   and re-runs that change nothing.
#
# v2 and v3 are derived from examples/webapp (v1) the way a developer would
# change it. Everything lands under target/quickstart/ (or $BERTH_DEMO).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD

# BERTH_BIN: a directory holding packager and agent already built (the
# test suite runs this script that way).
if [ -z "${BERTH_BIN:-}" ]; then
    cargo build --quiet --locked -p packager -p agent
    BERTH_BIN=$src/target/debug
fi
export PATH="$BERTH_BIN:$PATH"
command -v sqlite3 >/dev/null || { echo "the quick start needs sqlite3 (Debian: apt-get install sqlite3)" >&2; exit 2; }
demo=${BERTH_DEMO:-$src/target/quickstart}
rm -rf "$demo"
mkdir -p "$demo"
cd "$demo"

# Prints a command (quoted as a shell would need it), then runs it.
show() {
    local arg line=
    for arg in "$@"; do
        case $arg in
            "" | *[!A-Za-z0-9_./:@+=,%-]*)
                case $arg in *\'*) arg="\"$arg\"" ;; *) arg="'$arg'" ;; esac ;;
        esac
        line+=" $arg"
    done
    printf '\n$%s\n' "$line"
}
step() { show "$@"; "$@"; }
# The same for a command expected to exit with code $1, saying why ($2).
step_fails() {
    local want=$1 why=$2 code=0
    shift 2
    show "$@"
    "$@" || code=$?
    [ "$code" = "$want" ] || { echo "expected exit $want ($why), got $code" >&2; exit 1; }
    echo "exit $code, as expected: $why"
}
# Prints `cat > FILE` with the text it writes from stdin.
put() {
    local text
    text=$(cat)
    printf "\n\$ cat > %s <<'EOF'\n%s\nEOF\n" "$1" "$text"
    printf '%s\n' "$text" >"$1"
}

# CI's signing key (unencrypted for the demo; CI would keep it encrypted,
# with BERTH_SIGN_PASSWORD): every index publish and promote write is signed.
step packager keygen --out keys/ci --unencrypted
export BERTH_SIGN_KEY=$demo/keys/ci.key

# The node: every path under this root, so nothing needs root privileges
# (unset on a real node). Its agent.toml follows staging in the repository,
# trusts only indexes signed by CI's key, and gives webapp an env file
# saying where its database is.
export BERTH_ROOT=$demo/node
db=node/var/lib/webapp/app.db
mkdir -p node/etc/berth/env node/etc/berth/keys
cp keys/ci.pub node/etc/berth/keys/ci.pub
put node/etc/berth/agent.toml <<EOF
repository = "$demo/repo"
channels = ["staging"]
trusted_keys = ["/etc/berth/keys/ci.pub"]

[packages.webapp]
env_file = "/etc/berth/env/webapp.env"
EOF
put node/etc/berth/env/webapp.env <<EOF
SQLITE_DB=$demo/$db
EOF
notes() { step sqlite3 -header -column "$db" 'SELECT * FROM notes'; }

# --- v1: built by CI (the build number is Jenkins' BUILD_NUMBER), published
# to staging, installed; its post_install creates the database.
step cp -r "$src/examples/webapp" webapp
step packager build webapp --build 1 --out out
step packager publish out/webapp_1.4.2+1.tar.zst --repo repo --channel staging
step agent install webapp
# Re-running a step changes nothing.
step agent install webapp
# The application writes its data (here, by hand).
step sqlite3 "$db" "INSERT INTO notes (body) VALUES ('alice: v1 is live'), ('bob: staging looks good')"
notes
# Tested on staging: the same bytes move on to production.
step packager promote webapp@1.4.2+1 --from staging --to production --repo repo

# --- v2: a migration that changes the data, so data_epoch 2. Its dump hook
# (the ready hook sqlite-dump) saves v1's data into the snapshot before the
# switch; its post_install migrates.
step cp -r webapp webapp-v2
step sed -i -e 's/^version = .*/version = "1.5.0"/' -e 's/^data_epoch = 1 /data_epoch = 2 /' webapp-v2/package.toml
echo 1.5.0 | put webapp-v2/dist/VERSION
put webapp-v2/dist/migrations/002_authors.sql <<'EOF'
-- Schema 2: the author gets a column of its own.
ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT '';
UPDATE notes SET author = substr(body, 1, instr(body, ':') - 1),
                 body = ltrim(substr(body, instr(body, ':') + 1))
 WHERE instr(body, ':') > 0;
EOF
step packager build webapp-v2 --build 2 --out out
step packager publish out/webapp_1.5.0+2.tar.zst --repo repo --channel staging
step agent install webapp
notes
step sqlite3 "$db" "INSERT INTO notes (author, body) VALUES ('carol', 'written under v2')"

# --- v3: the version was bumped but not the VERSION file the site serves,
# so its health check fails after the switch: the agent switches back to v2
# and exits 3.
step cp -r webapp-v2 webapp-v3
step sed -i 's/^version = .*/version = "1.6.0"/' webapp-v3/package.toml
step packager build webapp-v3 --build 3 --out out
step packager publish out/webapp_1.6.0+3.tar.zst --repo repo --channel staging
step_fails 3 "v3 failed its health check, the node is back on v2" agent install webapp
step agent status webapp

# --- Back to v1. Its code cannot run on v2's data: a code-only rollback is
# refused (exit 2); --with-data runs v1's restore hook (the ready hook
# sqlite-restore) with the dump taken when v1 was replaced. What was
# written since (carol's note) is lost, as the command says.
step_fails 2 "v1's code does not run on data_epoch 2 data" agent rollback webapp --to 1.4.2+1
step agent snapshots webapp
step agent rollback webapp --to 1.4.2+1 --with-data
notes
step packager promote webapp@1.4.2+1 --from staging --to production --repo repo
step agent history webapp
printf '\nthe node root: %s (target: %s)\n' "$BERTH_ROOT" "$(readlink "$BERTH_ROOT/srv/webapp")"
