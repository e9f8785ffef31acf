# Shared by berth's benchmark scripts (sourced, not run): fail with a
# message, require tools and GNU time, and a work directory removed at exit
# unless KEEP=1. Each script sets `me` (its name, for messages) first.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

die() {
    echo "$me: $*" >&2
    exit 1
}

# require TOOL...: each must be on PATH.
require() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "\`$tool\` is required"
    done
}

# GNU time at /usr/bin/time (peak RSS); installed from Debian's `time`
# package when running as root.
require_gnu_time() {
    if [ ! -x /usr/bin/time ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing GNU time (Debian package \`time\`)" >&2
            apt-get install -y -q time >/dev/null 2>&1 ||
                { apt-get update -q >/dev/null && apt-get install -y -q time >/dev/null; }
        fi
        [ -x /usr/bin/time ] || die "GNU time is required at /usr/bin/time (Debian: apt-get install time)"
    fi
}

# make_work NAME: sets `work` to a new temp directory, removed at exit
# unless KEEP=1 (then its path is printed).
make_work() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap 'if [ "${KEEP:-0}" = 1 ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi' EXIT
}
